/*
 * vm.c -- the VM handle, the front door: img_vm_new() copies the options,
 * parses their specs (vm-spec.c), resolves image, boot and state
 * (vm-state.c) and builds the QEMU argv (vm-argv.c); the argv as a shell
 * line, the description, the info.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm-private.h"

static const char **dup_strv(struct img_vm *vm, const char *const *v, size_t n)
{
	const char **out = vm_keep(vm, img_malloc0(sizeof(char *) * (n + 1)));

	for (size_t i = 0; out && i < n; i++)
		out[i] = vm_strdup(vm, v[i]);
	return out;
}

static void *dup_mem(struct img_vm *vm, const void *p, size_t n)
{
	void *q = vm_keep(vm, img_malloc0(n ? n : 1));

	if (q && n)
		memcpy(q, p, n);
	return q;
}

static int copy_opts(struct img_vm *vm, const struct img_vm_opts *in)
{
	struct img_vm_opts *o = &vm->o;

	*o = *in;
#define S(f) o->f = vm_strdup(vm, in->f)
	S(image);
	S(system);
	S(root);
	S(store_dir);
	S(closure_info);
	S(nix_db);
	S(name);
	S(state_dir);
	S(state_home);
	S(tmpdir);
	S(store_image);
	S(shared_dir);
	S(host_certs);
	S(net_opts);
	S(relay_cmd);
	S(kernel);
	S(initrd);
	S(append);
	S(kernel_params);
	S(bios_file);
	S(qemu);
	S(swtpm);
	S(kvm_device);
	S(firmware);
	S(efi_vars_template);
	S(xchg_dir);
	S(serial_log);
	S(expect);
	S(disk_image);
	S(efi_vars);
	S(swtpm_dir);
	S(config_home);
#undef S
	o->shares = dup_strv(vm, in->shares, in->nshares);
	o->forwards = dup_strv(vm, in->forwards, in->nforwards);
	o->guest_forwards = dup_strv(vm, in->guest_forwards, in->nguest_forwards);
	o->qemu_opts = dup_strv(vm, in->qemu_opts, in->nqemu_opts);
	o->extra_args = dup_strv(vm, in->extra_args, in->nextra_args);
	o->consoles = dup_strv(vm, in->consoles, in->nconsoles);
	o->drives = dup_strv(vm, in->drives, in->ndrives);
	o->firmware_dirs =
	    in->firmware_dirs ? dup_strv(vm, in->firmware_dirs, in->nfirmware_dirs) : NULL;
	o->empty_disks = dup_mem(vm, in->empty_disks, sizeof(uint64_t) * in->nempty_disks);
	o->vlans = dup_mem(vm, in->vlans, sizeof(unsigned) * in->nvlans);
	if (!o->qemu)
		o->qemu = "qemu-system-x86_64";
	if (!o->swtpm)
		o->swtpm = "swtpm";
	if (!o->kvm_device)
		o->kvm_device = "/dev/kvm";
	if (!o->tmpdir || !*o->tmpdir)
		o->tmpdir = "/tmp";
	if (!o->memory_mib)
		o->memory_mib = 1024;
	if (!o->cores)
		o->cores = 1;
	if (!o->stop_timeout_s)
		o->stop_timeout_s = 10;
	return 0;
}

int img_vm_new(struct img_ctx *ctx, const struct img_vm_opts *in, struct img_vm **out)
{
	struct img_vm *vm;
	int r;

	*out = NULL;
	if ((!in->image || !*in->image) && (!in->system || !*in->system))
		return img_set_error(ctx, -EINVAL, "no IMAGE given (or --system TOPLEVEL)");
	vm = img_malloc0(sizeof(*vm));
	if (!vm)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	vm_dir_init(&vm->tmp);
	vm_dir_init(&vm->state);
	vm_dir_init(&vm->disk);
	vm_dir_init(&vm->vars);
	vm_dir_init(&vm->tpm);
	vm_dir_init(&vm->xchg);
	vm->disk_dir = vm->vars_dir = vm->tpm_dir = &vm->state;
	vm->lock_fd = vm->serial_fd = -1;
	copy_opts(vm, in);
	if ((r = vm_parse_specs(ctx, vm)) < 0 || (r = vm_resolve(ctx, vm)) < 0 ||
	    (r = vm_build_argv(ctx, vm)) < 0 ||
	    (in->dry_run && (r = vm_check_state(ctx, vm)) < 0)) {
		img_vm_free(vm);
		return r;
	}
	*out = vm;
	return 0;
}

void img_vm_free(struct img_vm *vm)
{
	if (!vm)
		return;
	/* The ephemeral state: emptied through the fd we made it with, removed
	 * by its name in the TMPDIR we hold, never by following a path. */
	if (vm->o.ephemeral && vm->state_created && vm->state.fd >= 0 && vm->tmp.fd >= 0) {
		char *b = vm_strdup(vm, vm->state_dir);

		if (b)
			vm_dir_rmrf(&vm->tmp, &vm->state, basename(b));
	}
	vm_dir_close(&vm->tpm);
	vm_dir_close(&vm->xchg);
	vm_dir_close(&vm->vars);
	vm_dir_close(&vm->disk);
	vm_dir_close(&vm->state);
	vm_dir_close(&vm->tmp);
	if (vm->serial_fd >= 0)
		close(vm->serial_fd);
	if (vm->lock_fd >= 0)
		close(vm->lock_fd); /* the lock goes with the last holder (QEMU has ended) */
	img_vm_firmware_release(&vm->fw);
	for (size_t i = 0; i < vm->npool; i++)
		free(vm->pool[i]);
	free(vm->pool);
	free(vm);
}

char *const *img_vm_argv(const struct img_vm *vm)
{
	return vm->argv;
}

/* Shell-quote: bare when only safe characters, else '...' with '\'' for '. */
static int quote_into(FILE *f, const char *s)
{
	int safe = *s != '\0';

	for (const char *p = s; *p; p++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
		            "_-./=:,@%+",
		            *p))
			safe = 0;
	if (safe)
		return fputs(s, f);
	fputc('\'', f);
	for (const char *p = s; *p; p++) {
		if (*p == '\'')
			fputs("'\\''", f);
		else
			fputc(*p, f);
	}
	return fputc('\'', f);
}

int img_vm_cmdline(const struct img_vm *vm, char **out)
{
	size_t len;
	FILE *f = open_memstream(out, &len);

	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < vm->argc; i++) {
		if (i)
			fputc(' ', f);
		quote_into(f, vm->argv[i]);
	}
	fputc('\n', f);
	return fclose(f) ? -ENOMEM : 0;
}

static const char *const boot_name[] = { "auto", "efi", "bios", "direct" };

/* What a start does with @path; the full checks (owner, marks, the lock)
 * are vm_check_state()'s warnings. */
static void file_line(FILE *f, const char *what, const char *path, mode_t type, int fresh)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		fprintf(f, "  %-22s %s (new)\n", what, path);
	else if ((st.st_mode & S_IFMT) != type)
		fprintf(f, "  %-22s %s (exists, a %s: a start refuses it)\n", what, path,
		        vm_file_kind(st.st_mode));
	else
		fprintf(f, "  %-22s %s (exists, %s)\n", what, path,
		        fresh ? "removed by --fresh if vmlaunch made it" : "kept");
}

static const char *const disk_if_name[] = { "virtio", "scsi", "ide" };

int img_vm_describe(const struct img_vm *vm, char **out)
{
	const struct img_vm_opts *o = &vm->o;
	size_t len;
	FILE *f = open_memstream(out, &len);

	if (!f)
		return -ENOMEM;
	fprintf(f, "vm %s\n", o->name);
	if (o->system) {
		fprintf(f, "system: %s (%zu store paths in its closure, from %s)\n", vm->sys_path,
		        vm->nclo, o->closure_info ? o->closure_info : vm->nix_db);
		fprintf(f, "nix store: %s\n",
		        o->store_image || vm->store_cache
		            ? "the store image (EROFS, nix-store)"
		            : "the host's, shared as 9p tag nix-store");
	} else {
		fprintf(f, "image: %s (%s, never written)\n", vm->image, vm->image_format);
	}
	fprintf(f, "boot: %s (from the %s)\n", boot_name[vm->boot], vm->boot_source);
	fprintf(f, "accelerator: %s (%s)\n", vm->accel == IMG_VM_ACCEL_KVM ? "kvm" : "tcg",
	        vm->accel_reason);
	if (vm->boot == IMG_VM_BOOT_EFI) {
		fprintf(f, "firmware: %s (%s)\n", vm->fw.code, vm->fw.code_format);
		fprintf(f, "  vars template: %s\n", vm->fw.vars);
		fprintf(f, "  chosen by: %s\n",
		        vm->fw.descriptor ? vm->fw.descriptor
		                          : "known path (no descriptor matched)");
		fprintf(f, "  secure boot: %s, SMM: %s\n", vm->fw.secure_boot ? "yes" : "no",
		        vm->fw.requires_smm ? "on" : "off");
	} else if (vm->boot == IMG_VM_BOOT_DIRECT) {
		fprintf(f, "kernel: %s\n", vm->kernel);
		if (vm->kernel_source)
			fprintf(f, "  from: %s (instead of TOPLEVEL/kernel)\n", vm->kernel_source);
		else if (vm->kernel_var)
			fprintf(f, "  override: --kernel FILE or %s\n", vm->kernel_var);
		fprintf(f, "initrd: %s\nappend: %s\n", vm->initrd ? vm->initrd : "(none)",
		        vm->append);
	}
	fprintf(f, "disk interface: %s\n", disk_if_name[o->disk_if]);
	fprintf(f, "state: %s%s\n", vm->state_dir,
	        o->ephemeral ? " (ephemeral: removed on exit)" : "");
	fprintf(f, "would create:\n");
	if (vm->state_is_template)
		fprintf(f, "  %-22s %s (new)\n", "state directory", vm->state_dir);
	else
		file_line(f, "state directory", vm->state_dir, S_IFDIR, 0);
	if (!o->system)
		file_line(f, "overlay (qcow2)", vm->overlay, S_IFREG, o->fresh);
	else if (vm->root_disk)
		file_line(f, "root disk (ext4 nixos)", vm->root_disk, S_IFREG, 0);
	else
		fprintf(f, "  %-22s %s\n", "root", "tmpfs (no root disk)");
	if (vm->store_cache)
		file_line(f, "store image (cache)", vm->store_cache, S_IFREG, 0);
	if (o->system)
		fprintf(f, "  %-22s %s\n", "registration", vm->reg_host);
	if (vm->boot == IMG_VM_BOOT_EFI)
		file_line(f, "EFI variables", vm->efi_vars, S_IFREG, o->fresh);
	if (o->tpm)
		file_line(f, "swtpm state", vm->swtpm_dir, S_IFDIR, 0);
	for (size_t i = 0; i < o->nempty_disks; i++)
		file_line(f, "empty disk", vm->empty_paths[i], S_IFREG, 0);
	file_line(f, "9p xchg directory", vm->xchg_dir, S_IFDIR, 0);
	if (o->host_certs)
		file_line(f, "CA bundle copy", vm->certs_dir, S_IFDIR, 0);
	fprintf(f, "  %-22s %s\n", "console log", vm->console_log);
	fprintf(f, "  %-22s %s\n", "QMP socket", vm->qmp_sock);
	if (o->guest_agent)
		fprintf(f, "  %-22s %s\n", "guest agent socket", vm->qga_sock);
	for (size_t i = 0; i < vm->nfwd; i++)
		fprintf(f, "forward: %s %s:%u -> guest port %u\n", vm->fwd[i].udp ? "udp" : "tcp",
		        vm->fwd[i].host_addr, vm->fwd[i].host_port, vm->fwd[i].guest_port);
	for (size_t i = 0; i < o->nvlans; i++)
		fprintf(f, "vlan %u: mac 52:54:00:12:%02x:%02x\n", o->vlans[i], o->vlans[i],
		        vm->vlan_index);
	return fclose(f) ? -ENOMEM : 0;
}

void img_vm_get_info(const struct img_vm *vm, struct img_vm_info *info)
{
	memset(info, 0, sizeof(*info));
	info->name = vm->o.name;
	info->state_dir = vm->state_dir;
	info->boot = vm->boot;
	info->boot_source = vm->boot_source;
	info->accel = vm->accel;
	info->accel_reason = vm->accel_reason;
	if (vm->boot == IMG_VM_BOOT_EFI) {
		info->fw_code = vm->fw.code;
		info->fw_vars_template = vm->fw.vars;
		info->fw_descriptor = vm->fw.descriptor;
	}
	info->console_log = vm->console_log;
	info->qmp_socket = vm->qmp_sock;
	info->root_disk = vm->root_disk;
	info->root_disk_created = vm->root_disk_created;
	info->store_image = vm->o.store_image ? vm->o.store_image : vm->store_cache;
	info->store_image_cached = vm->store_cached;
	info->closure_paths = vm->nclo;
}
