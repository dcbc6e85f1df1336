/*
 * vm-state.c -- what a VM is started on: the image and its boot mode, the
 * accelerator, the firmware, and the per-VM state directory (../shared/CLI.md,
 * vmlaunch): overlay qcow2 backed by IMAGE with the base image's identity
 * recorded beside it, a copy of the EFI variable template, swtpm state,
 * empty disks, the console log and sockets. Directories 0700, files 0600.
 * IMAGE itself is only ever opened read-only.
 */
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#include <linux/kvm.h>

#include <img/disk.h>
#include <img/manifest.h>
#include <img/qcow2.h>
#include <img/vdisk.h>

#include "vm-private.h"

/* ---- accelerator ----------------------------------------------------------------- */

/*
 * The API version says the kernel offers KVM, not that this QEMU can run a
 * guest on it: on some hosts QEMU aborts while resetting the first vCPU
 * ("failed to set MSR ..."). So start the real QEMU once, paused, with KVM
 * and the CPU model we would use, and ask it to quit over QMP on its stdin.
 * 1 = it ran, 0 = it failed, -1 = QEMU could not be started (undecided).
 */
static int kvm_trial(struct img_vm *vm, char *why, size_t whylen)
{
	static const char qmp[] = "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n";
	char *const argv[] = { (char *)vm->o.qemu,
		               "-accel",
		               "kvm",
		               "-cpu",
		               "host",
		               "-machine",
		               "q35",
		               "-m",
		               "32",
		               "-nodefaults",
		               "-display",
		               "none",
		               "-S",
		               "-qmp",
		               "stdio",
		               NULL };
	int in[2], status = 0, waited = 0;
	pid_t pid;

	if (pipe2(in, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(in[0]);
		close(in[1]);
		return -1;
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(in[0], 0);
		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	if (write(in[1], qmp, sizeof(qmp) - 1) < 0) {
		/* QEMU gone already: its status says why. */
	}
	close(in[1]);
	/* A few seconds at most; a QEMU that hangs is killed and not trusted. */
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (waited++ > 500) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			snprintf(why, whylen, "%s with KVM did not answer within 5 s", vm->o.qemu);
			return 0;
		}
		usleep(10000);
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 1;
	if (WIFSIGNALED(status))
		snprintf(why, whylen, "%s died (signal %d) starting a paused KVM guest", vm->o.qemu,
		         WTERMSIG(status));
	else
		snprintf(why, whylen, "%s exited with %d starting a paused KVM guest", vm->o.qemu,
		         WEXITSTATUS(status));
	return 0;
}

int vm_probe_accel(struct img_ctx *ctx, struct img_vm *vm)
{
	const char *dev = vm->o.kvm_device;
	int fd, ver = -1, err = 0;

	if (vm->o.accel == IMG_VM_ACCEL_TCG) {
		vm->accel = IMG_VM_ACCEL_TCG;
		vm->accel_reason = vm_strdup(vm, "asked for with --accel tcg");
		return 0;
	}
	/* Existence is not enough: open it read-write and ask (as QEMU will). */
	fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
	} else {
		ver = ioctl(fd, KVM_GET_API_VERSION, 0);
		if (ver < 0)
			err = errno;
		close(fd);
	}
	if (ver == KVM_API_VERSION) {
		char why[256] = "";
		int ok = kvm_trial(vm, why, sizeof(why));

		if (ok != 0) {
			vm->accel = IMG_VM_ACCEL_KVM;
			vm->accel_reason =
			    vm_printf(vm, "%s answers KVM API version %d%s", dev, ver,
			              ok > 0 ? " and a paused KVM guest starts" : "");
			return 0;
		}
		if (vm->o.accel == IMG_VM_ACCEL_KVM)
			return img_set_error(ctx, -ENODEV,
			                     "--accel kvm: KVM is not usable here: %s", why);
		vm->accel = IMG_VM_ACCEL_TCG;
		vm->accel_reason =
		    vm_printf(vm, "KVM is not usable here (%s); using TCG (slow)", why);
		return 0;
	}
	{
		const char *hint =
		    err == EACCES   ? " (add yourself to the group owning it, often kvm)"
		    : err == ENOENT ? " (no KVM module loaded, or no virtualisation)"
		    : err == EBUSY  ? " (another hypervisor holds the CPU's VT-x/AMD-V)"
		                    : "";
		const char *why = err ? strerror(err) : "unexpected API version";

		if (vm->o.accel == IMG_VM_ACCEL_KVM)
			return img_set_error(ctx, err ? -err : -ENODEV,
			                     "--accel kvm: %s is not usable: %s%s", dev, why, hint);
		vm->accel = IMG_VM_ACCEL_TCG;
		vm->accel_reason = vm_printf(vm, "%s: %s%s; using TCG (slow)", dev, why, hint);
	}
	return 0;
}

/* ---- the image --------------------------------------------------------------------- */

/* Read the qcow2 header ourselves for the two facts that decide whether we
 * may use the image at all (magic, backing file); the qcow2 backend does the
 * full validation when the partition table is read. */
static int probe_format(struct img_ctx *ctx, const char *path, const char *what, char **format,
                        uint64_t *size, struct img_vm *vm)
{
	uint8_t h[32];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s %s: %s", what, path, strerror(errno));
	if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
		close(fd);
		return img_set_error(ctx, -EINVAL, "%s %s: not a regular file or block device",
		                     what, path);
	}
	memset(h, 0, sizeof(h));
	r = st.st_size >= (off_t)sizeof(h) ? img_pread_full(fd, h, sizeof(h), 0) : 0;
	close(fd);
	if (r < 0)
		return img_set_error(ctx, r, "%s %s: %s", what, path, strerror(-r));
	*size = (uint64_t)st.st_size;
	if (!memcmp(h, "QFI\xfb", 4)) {
		uint32_t ver = img_get_be32(h + 4);

		if (ver != 2 && ver != 3)
			return img_set_error(ctx, -EINVAL,
			                     "%s %s: qcow2 version %u is not supported", what, path,
			                     ver);
		if (img_get_be64(h + 8) != 0)
			return img_set_error(
			    ctx, -EINVAL,
			    "%s %s: a qcow2 with a backing file; vmlaunch does not "
			    "follow backing files of its input (flatten it with "
			    "'qemu-img convert -O qcow2')",
			    what, path);
		*format = vm_strdup(vm, "qcow2");
		*size = img_get_be64(h + 24);
		return 0;
	}
	if (S_ISREG(st.st_mode)) {
		/* VHD, VDI, VMDK: qemu reads them as the overlay's backing file. */
		enum img_vdisk_format vf;
		const char *name;
		struct img_dev *dev;

		if ((r = img_vdisk_probe(ctx, path, &vf, &name)) < 0)
			return img_error_prefix(ctx, r, "%s", what);
		if (vf) {
			if ((r = img_dev_vdisk_open(ctx, path, &dev)) < 0)
				return img_error_prefix(ctx, r, "%s", what);
			*size = img_dev_size(dev);
			img_dev_unref(dev);
			*format = vm_strdup(vm, name);
			return 0;
		}
	}
	if (S_ISREG(st.st_mode) && (st.st_size < 512 || st.st_size % 512))
		return img_set_error(ctx, -EINVAL,
		                     "%s %s: not a disk image (neither qcow2 nor a raw disk: %lld "
		                     "bytes is not a multiple of 512)",
		                     what, path, (long long)st.st_size);
	*format = vm_strdup(vm, "raw");
	return 0;
}

static char *manifest_path(struct img_vm *vm, int alt)
{
	char *p;

	if (!alt)
		return vm_printf(vm, "%s.json", vm->image);
	/* disk.qcow2 -> disk.json */
	p = vm_strdup(vm, vm->image);
	if (p && strrchr(p, '.') > strrchr(p, '/')) {
		*strrchr(p, '.') = '\0';
		return vm_printf(vm, "%s.json", p);
	}
	return NULL;
}

static int boot_from_manifest(struct img_ctx *ctx, struct img_vm *vm, int *decided)
{
	struct img_manifest *m = NULL;
	char *path;
	int r = -ENOENT;

	*decided = 0;
	for (int alt = 0; alt < 2 && r == -ENOENT; alt++) {
		path = manifest_path(vm, alt);
		if (!path)
			break;
		r = img_manifest_read(ctx, path, &m);
		if (r == -ENOENT)
			img_ctx_clear_error(ctx);
	}
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (m->system)
		vm->manifest_system = vm_strdup(vm, m->system);
	if (m->kernel_params)
		vm->manifest_params = vm_strdup(vm, m->kernel_params);
	if (m->boot && !strcmp(m->boot, "efi")) {
		vm->boot = IMG_VM_BOOT_EFI;
		*decided = 1;
	} else if (m->boot && !strcmp(m->boot, "bios")) {
		vm->boot = IMG_VM_BOOT_BIOS;
		*decided = 1;
	} else if (m->boot && !strcmp(m->boot, "none") && m->system) {
		vm->boot = IMG_VM_BOOT_DIRECT;
		*decided = 1;
	}
	img_manifest_free(m);
	if (*decided)
		vm->boot_source = "manifest";
	return 0;
}

static int boot_from_table(struct img_ctx *ctx, struct img_vm *vm)
{
	struct img_dev *dev;
	struct img_disk_info info;
	int r;

	r = img_dev_open_image(ctx, vm->image, 0, &dev);
	if (r < 0)
		return img_error_prefix(ctx, r, "IMAGE %s", vm->image);
	r = img_disk_probe(ctx, dev, &info);
	img_dev_unref(dev);
	if (r < 0)
		return img_error_prefix(ctx, r, "IMAGE %s", vm->image);
	vm->boot_source = "partition table";
	if (info.label == IMG_DISK_GPT && info.has_esp) {
		vm->boot = IMG_VM_BOOT_EFI;
	} else if (info.label == IMG_DISK_MBR ||
	           (info.label == IMG_DISK_GPT && info.has_bios_boot)) {
		vm->boot = IMG_VM_BOOT_BIOS;
	} else if (vm->o.kernel) {
		vm->boot = IMG_VM_BOOT_DIRECT;
		vm->boot_source = "options (--kernel given, no boot partition)";
	} else {
		return img_set_error(ctx, -EINVAL,
		                     "IMAGE %s: cannot tell how it boots: no manifest beside it, "
		                     "%s; pass --boot efi|bios, or --kernel for direct boot",
		                     vm->image,
		                     info.label == IMG_DISK_NONE ? "no partition table"
		                                                 : "no ESP or BIOS boot partition");
	}
	return 0;
}

/* Direct boot: --kernel/--initrd/--append, else the manifest's system. */
static int resolve_direct(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	const char *base;
	char *append;

	if (o->kernel) {
		vm->kernel = vm_strdup(vm, o->kernel);
		vm->initrd = vm_strdup(vm, o->initrd);
		base = o->append ? o->append : "";
	} else if (vm->manifest_system) {
		vm->kernel = vm_printf(vm, "%s/kernel", vm->manifest_system);
		vm->initrd = vm_printf(vm, "%s/initrd", vm->manifest_system);
		base = vm_printf(vm, "%s%sinit=%s/init", o->append ? o->append : "",
		                 o->append ? " " : "", vm->manifest_system);
		if (vm->manifest_params)
			base = vm_printf(vm, "%s %s", vm->manifest_params, base);
	} else {
		return img_set_error(ctx, -EINVAL,
		                     "--boot direct needs --kernel (the image's manifest names no "
		                     "system)");
	}
	if (access(vm->kernel, R_OK))
		return img_set_error(ctx, -errno, "kernel %s: %s", vm->kernel, strerror(errno));
	if (vm->initrd && access(vm->initrd, R_OK))
		return img_set_error(ctx, -errno, "initrd %s: %s", vm->initrd, strerror(errno));
	/* The last console= is the preferred one: serial when headless, the
	 * screen with graphics (the reference orders qemu.consoles this way). */
	append = vm_strdup(vm, base);
	if (!strstr(append, "console="))
		append = vm_printf(vm, "%s%s%s", append, *append ? " " : "",
		                   o->graphics ? "console=ttyS0,115200 console=tty0"
		                               : "console=ttyS0,115200");
	if (o->kernel_params && *o->kernel_params)
		append = vm_printf(vm, "%s %s", append, o->kernel_params);
	vm->append = append;
	return vm->append ? 0 : -ENOMEM;
}

/* Known firmware paths, only when no descriptor fits (and said aloud). */
static const struct {
	const char *code, *vars;
	int secure;
} fallback_fw[] = {
	{ "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", 0 },
	{ "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd", 0 },
	{ "/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd", 0 },
	{ "/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd", 0 },
	{ "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd", 1 },
	{ "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
	  1 },
};

static int resolve_firmware(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	const char *defdirs[3] = { "/usr/share/qemu/firmware", "/etc/qemu/firmware", NULL };
	const char *const *dirs = o->firmware_dirs;
	size_t ndirs = o->nfirmware_dirs;
	int r;

	if (!dirs) {
		if (o->config_home)
			defdirs[2] = vm_printf(vm, "%s/qemu/firmware", o->config_home);
		dirs = defdirs;
		ndirs = 3;
	}
	r = img_vm_firmware_find(ctx, dirs, ndirs, o->secure_boot, &vm->fw);
	if (r == 0) {
		vm->have_fw = 1;
		return 0;
	}
	if (r != -ENOENT)
		return r;
	if (!o->no_firmware_fallback) {
		for (size_t i = 0; i < IMG_ARRAY_SIZE(fallback_fw); i++) {
			if (fallback_fw[i].secure != !!o->secure_boot ||
			    access(fallback_fw[i].code, R_OK) || access(fallback_fw[i].vars, R_OK))
				continue;
			img_ctx_clear_error(ctx);
			vm->fw.code = strdup(fallback_fw[i].code);
			vm->fw.vars = strdup(fallback_fw[i].vars);
			vm->fw.code_format = strdup("raw");
			vm->fw.vars_format = strdup("raw");
			vm->fw.secure_boot = vm->fw.requires_smm = vm->fw.enrolled_keys =
			    fallback_fw[i].secure;
			vm->have_fw = 1;
			img_log(ctx, IMG_LOG_WARN,
			        "no firmware descriptor fits; falling back to the known path %s",
			        fallback_fw[i].code);
			return 0;
		}
	}
	if (o->secure_boot)
		return img_set_error(
		    ctx, -ENOENT,
		    "--secure-boot: no UEFI firmware with Secure Boot and enrolled "
		    "keys found (QEMU firmware descriptors in /usr/share/qemu/"
		    "firmware; Debian: install ovmf)");
	return img_set_error(ctx, -ENOENT,
	                     "no usable UEFI firmware: no QEMU firmware descriptor for x86_64 q35 "
	                     "with a flash mapping%s (Debian: install ovmf)",
	                     o->no_firmware_fallback ? "" : ", and none of the known OVMF paths");
}

/* ---- paths ------------------------------------------------------------------------ */

static int check_sock(struct img_ctx *ctx, const struct img_vm *vm, const char *path)
{
	struct sockaddr_un sa;

	if (strlen(path) >= sizeof(sa.sun_path))
		return img_set_error(ctx, -ENAMETOOLONG,
		                     "%s: too long for a unix socket (%zu bytes, at most %zu); use "
		                     "a shorter %s",
		                     path, strlen(path), sizeof(sa.sun_path) - 1,
		                     vm->o.ephemeral ? "TMPDIR" : "--state-dir");
	return 0;
}

int vm_compute_paths(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	const char *s = vm->state_dir;
	int r;

	vm->overlay =
	    o->disk_image ? vm_strdup(vm, o->disk_image) : vm_printf(vm, "%s/disk.qcow2", s);
	vm->overlay_id = vm_printf(vm, "%s.base-id", vm->overlay);
	vm->efi_vars =
	    o->efi_vars ? vm_strdup(vm, o->efi_vars) : vm_printf(vm, "%s/efi-vars.fd", s);
	vm->swtpm_dir = o->swtpm_dir ? vm_strdup(vm, o->swtpm_dir) : vm_printf(vm, "%s/swtpm", s);
	vm->swtpm_sock = vm_printf(vm, "%s/swtpm.ctrl", vm->swtpm_dir);
	vm->swtpm_log = vm_printf(vm, "%s/swtpm.log", vm->swtpm_dir);
	vm->console_log = vm_printf(vm, "%s/console.log", s);
	vm->qmp_sock = vm_printf(vm, "%s/qmp.sock", s);
	vm->qga_sock = vm_printf(vm, "%s/qga.sock", s);
	vm->certs_dir = vm_printf(vm, "%s/certs", s);
	vm->xchg_dir = vm_printf(vm, "%s/xchg", s);
	vm->empty_paths = vm_keep(vm, img_malloc0(sizeof(char *) * (o->nempty_disks + 1)));
	if (!vm->empty_paths)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < o->nempty_disks; i++)
		vm->empty_paths[i] = vm_printf(vm, "%s/empty%zu.qcow2", s, i);
	if (!vm->qga_sock || !vm->certs_dir || !vm->xchg_dir || !vm->swtpm_log)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if ((r = check_sock(ctx, vm, vm->qmp_sock)) < 0)
		return r;
	if (o->tpm && (r = check_sock(ctx, vm, vm->swtpm_sock)) < 0)
		return r;
	if (o->guest_agent && (r = check_sock(ctx, vm, vm->qga_sock)) < 0)
		return r;
	for (size_t i = 0; i < vm->nshares; i++) {
		struct vm_share *sh = &vm->shares[i];

		if (!strcmp(sh->tag, "certs"))
			sh->source = vm->certs_dir;
		else if (!strcmp(sh->tag, "xchg") || (!strcmp(sh->tag, "shared") && sh->ours))
			sh->source = vm->xchg_dir;
	}
	return 0;
}

static char *absolute(struct img_vm *vm, const char *p)
{
	char buf[PATH_MAX];

	if (realpath(p, buf))
		return vm_strdup(vm, buf);
	return NULL;
}

static int valid_name(const char *n)
{
	if (!*n || !strcmp(n, ".") || !strcmp(n, "..") || strlen(n) > 64)
		return 0;
	for (; *n; n++)
		if (*n == '/' || (unsigned char)*n < 0x20)
			return 0;
	return 1;
}

int vm_resolve(struct img_ctx *ctx, struct img_vm *vm)
{
	struct img_vm_opts *o = &vm->o;
	int r, decided = 0;

	/* The image: must exist and be a disk image we may use. */
	vm->image = absolute(vm, o->image);
	if (!vm->image)
		return img_set_error(ctx, -errno, "IMAGE %s: %s", o->image, strerror(errno));
	if ((r = probe_format(ctx, vm->image, "IMAGE", &vm->image_format, &vm->image_size, vm)) < 0)
		return r;
	if (o->store_image) {
		char *abs = absolute(vm, o->store_image);
		uint64_t sz;

		if (!abs)
			return img_set_error(ctx, -errno, "--store-image %s: %s", o->store_image,
			                     strerror(errno));
		o->store_image = abs;
		if ((r = probe_format(ctx, abs, "--store-image", &vm->store_format, &sz, vm)) < 0)
			return r;
	}
	if (o->bios_file && access(o->bios_file, R_OK))
		return img_set_error(ctx, -errno, "--bios-file %s: %s", o->bios_file,
		                     strerror(errno));
	if (o->host_certs && access(o->host_certs, R_OK))
		return img_set_error(ctx, -errno, "--host-certs: CA bundle %s: %s", o->host_certs,
		                     strerror(errno));
	for (size_t i = 0; i < vm->nshares; i++) {
		struct stat st;

		char *abs;

		if (vm->shares[i].ours)
			continue;
		if (stat(vm->shares[i].source, &st) < 0 || !S_ISDIR(st.st_mode))
			return img_set_error(ctx, -ENOTDIR, "9p share '%s': %s is not a directory",
			                     vm->shares[i].tag, vm->shares[i].source);
		/* QEMU would resolve a relative path against its own directory. */
		if (!(abs = absolute(vm, vm->shares[i].source)))
			return img_set_error(ctx, -errno, "9p share '%s': %s: %s",
			                     vm->shares[i].tag, vm->shares[i].source,
			                     strerror(errno));
		vm->shares[i].source = abs;
	}

	/* The name, and from it the MAC index on VLANs and the state dir. */
	if (!o->name) {
		char *b = vm_strdup(vm, o->image), *base = basename(b), *dot = strrchr(base, '.');

		if (dot && dot != base)
			*dot = '\0';
		o->name = vm_strdup(vm, base);
	}
	if (!valid_name(o->name))
		return img_set_error(ctx, -EINVAL,
		                     "--name '%s': use 1-64 characters without '/' (it names the "
		                     "state directory)",
		                     o->name);
	vm->vlan_index = o->vlan_index;
	if (!vm->vlan_index) {
		uint32_t h = 2166136261u; /* FNV-1a: the same name gives the same MAC */

		for (const char *p = o->name; *p; p++)
			h = (h ^ (uint8_t)*p) * 16777619u;
		vm->vlan_index = 1 + h % 254;
	} else if (vm->vlan_index > 254) {
		return img_set_error(ctx, -EINVAL, "--vlan-index %u: must be 1 to 254",
		                     vm->vlan_index);
	}

	/* Boot mode: option, manifest, partition table. */
	if (o->boot != IMG_VM_BOOT_AUTO) {
		vm->boot = o->boot;
		vm->boot_source = "option";
	} else if (o->kernel) {
		vm->boot = IMG_VM_BOOT_DIRECT;
		vm->boot_source = "option (--kernel)";
	} else {
		if ((r = boot_from_manifest(ctx, vm, &decided)) < 0)
			return r;
		if (!decided && (r = boot_from_table(ctx, vm)) < 0)
			return r;
	}
	if (o->secure_boot && vm->boot != IMG_VM_BOOT_EFI)
		return img_set_error(ctx, -EINVAL,
		                     "--secure-boot needs UEFI boot (this VM boots %s)",
		                     vm->boot == IMG_VM_BOOT_BIOS ? "with BIOS" : "directly");
	if (vm->boot == IMG_VM_BOOT_DIRECT && (r = resolve_direct(ctx, vm)) < 0)
		return r;
	if (vm->boot == IMG_VM_BOOT_EFI && (r = resolve_firmware(ctx, vm)) < 0)
		return r;
	if ((r = vm_probe_accel(ctx, vm)) < 0)
		return r;

	/* State. */
	if (o->state_dir) {
		vm->state_dir = vm_strdup(vm, o->state_dir);
	} else if (o->ephemeral) {
		vm->state_dir = vm_printf(vm, "%s/vmlaunch-%s.XXXXXX", o->tmpdir, o->name);
		vm->state_is_template = 1;
	} else if (o->state_home) {
		vm->state_dir = vm_printf(vm, "%s/vmlaunch/%s", o->state_home, o->name);
	} else {
		return img_set_error(ctx, -EINVAL,
		                     "no state directory: give --state-dir (or set XDG_STATE_HOME "
		                     "or HOME)");
	}
	if (o->state_dir && o->ephemeral)
		return img_set_error(
		    ctx, -EINVAL,
		    "--ephemeral and --state-dir together: --ephemeral removes its "
		    "state, so it makes its own directory");
	return vm_compute_paths(ctx, vm);
}

/* ---- preparing the state ---------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(p);
	return 0;
}

void vm_rmrf(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * Make the missing directories of @path, each 0700. A directory that
 * exists is never changed (TMPDIR, the user's state dir, the directory of
 * NIX_DISK_IMAGE: not ours to chmod). *@created: the last one was made here.
 */
static int mkdir_p(struct img_ctx *ctx, const char *path, int *created)
{
	char buf[PATH_MAX];
	struct stat st;

	if (created)
		*created = 0;
	if (strlen(path) >= sizeof(buf))
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", path);
	strcpy(buf, path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return img_set_error(ctx, -errno, "%s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0700) == 0) {
		if (created)
			*created = 1;
	} else if (errno != EEXIST) {
		return img_set_error(ctx, -errno, "%s: %s", buf, strerror(errno));
	}
	if (stat(buf, &st) < 0 || !S_ISDIR(st.st_mode))
		return img_set_error(ctx, -ENOTDIR, "%s: not a directory", buf);
	return 0;
}

/*
 * A state directory we did not make (--state-dir, NIX_SWTPM_DIR, the
 * default one from an earlier run) holds the VM's disk, sockets and logs:
 * use it only if it is a real directory of the caller that nobody else can
 * write into (as ssh checks ~/.ssh). Readable by others: said once.
 */
static int check_own_dir(struct img_ctx *ctx, const char *path, const char *what)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return img_set_error(ctx, -errno, "%s %s: %s", what, path, strerror(errno));
	if (S_ISLNK(st.st_mode))
		return img_set_error(ctx, -ELOOP,
		                     "%s %s is a symbolic link; vmlaunch does not follow it (give "
		                     "the directory itself)",
		                     what, path);
	if (!S_ISDIR(st.st_mode))
		return img_set_error(ctx, -ENOTDIR, "%s %s: not a directory", what, path);
	if (st.st_uid != geteuid())
		return img_set_error(ctx, -EPERM,
		                     "%s %s is owned by uid %u, not by you (uid %u); refusing to "
		                     "use it",
		                     what, path, (unsigned)st.st_uid, (unsigned)geteuid());
	if (st.st_mode & 022)
		return img_set_error(ctx, -EPERM,
		                     "%s %s is writable by %s (mode %04o); refusing to use it "
		                     "(chmod go-w it, or give another directory)",
		                     what, path, st.st_mode & 002 ? "others" : "its group",
		                     (unsigned)(st.st_mode & 07777));
	if (st.st_mode & 077)
		img_log(ctx, IMG_LOG_WARN,
		        "%s %s is readable by others (mode %04o); the VM's disk and console log "
		        "in it are too",
		        what, path, (unsigned)(st.st_mode & 07777));
	return 0;
}

/* A directory of the state that the VM sees through 9p: made with @mode if
 * missing; an existing one must be a real directory of ours (never chmod'ed). */
static int state_subdir(struct img_ctx *ctx, const char *path, mode_t mode)
{
	struct stat st;

	if (mkdir(path, mode) == 0)
		return chmod(path, mode) < 0
		           ? img_set_error(ctx, -errno, "%s: %s", path, strerror(errno))
		           : 0; /* past the umask: made just now */
	if (errno != EEXIST)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return img_set_error(ctx, -ENOTDIR, "%s: not a directory (a symlink?)", path);
	if (st.st_uid != getuid())
		return img_set_error(ctx, -EPERM, "%s: owned by uid %u, not by us", path,
		                     (unsigned)st.st_uid);
	return 0;
}

static int copy_file(struct img_ctx *ctx, const char *from, const char *to, mode_t mode)
{
	char buf[65536];
	int in = open(from, O_RDONLY | O_CLOEXEC), out;
	ssize_t n;

	if (in < 0)
		return img_set_error(ctx, -errno, "%s: %s", from, strerror(errno));
	out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (out < 0) {
		int e = errno;

		close(in);
		return img_set_error(ctx, -e, "%s: %s", to, strerror(e));
	}
	if (fchmod(out, mode) < 0) /* the umask may have taken bits */
		n = -1;
	else
		while ((n = read(in, buf, sizeof(buf))) > 0)
			if (write(out, buf, (size_t)n) != n) {
				n = -1;
				break;
			}
	if (n < 0 || fsync(out) < 0) {
		int e = errno ? errno : EIO;

		close(in);
		close(out);
		unlink(to);
		return img_set_error(ctx, -e, "copying %s to %s: %s", from, to, strerror(e));
	}
	close(in);
	close(out);
	return 0;
}

/* What identifies the base image: if any of it changes, the overlay's
 * clusters sit on top of a different disk. */
static char *identity(struct img_vm *vm)
{
	struct stat st;

	if (stat(vm->image, &st) < 0)
		return NULL;
	return vm_printf(vm, "image=%s\ndev=%llu\nino=%llu\nsize=%lld\nmtime=%lld.%09ld\n",
	                 vm->image, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
	                 (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* A new file of ours, 0600 from the start: never one that was there (or a
 * symbolic link planted in its place). The writers then open it by name. */
static int create_private(struct img_ctx *ctx, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	close(fd);
	return 0;
}

static int write_text(struct img_ctx *ctx, const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int r;

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	r = img_pwrite_full(fd, text, strlen(text), 0);
	close(fd);
	return r < 0 ? img_set_error(ctx, r, "%s: %s", path, strerror(-r)) : 0;
}

static int prepare_overlay(struct img_ctx *ctx, struct img_vm *vm)
{
	char *id = identity(vm), *old = NULL;
	struct stat st;
	int r;

	if (!id)
		return img_set_error(ctx, -errno, "IMAGE %s: %s", vm->image, strerror(errno));
	if (stat(vm->overlay, &st) == 0) {
		int fd = open(vm->overlay_id, O_RDONLY | O_CLOEXEC);
		char buf[4096];
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n >= 0) {
			buf[n] = '\0';
			old = vm_strdup(vm, buf);
		}
		if (old && !strcmp(old, id))
			return 0;
		if (old)
			return img_set_error(
			    ctx, -ESTALE,
			    "IMAGE %s changed since the overlay %s was made on it "
			    "(identity in %s differs); the VM's writes belong to the "
			    "old image. Start again with --fresh (discards the VM's "
			    "disk changes and EFI variables)",
			    vm->image, vm->overlay, vm->overlay_id);
		/* An overlay without a record (e.g. NIX_DISK_IMAGE from the NixOS
		 * runner): adopt it only if it is backed by this very image. */
		{
			struct img_qcow2_info qi;

			r = img_qcow2_probe(ctx, vm->overlay, &qi);
			if (r < 0)
				return img_error_prefix(ctx, r, "overlay %s", vm->overlay);
			if (strcmp(qi.backing_file, vm->image))
				return img_set_error(
				    ctx, -ESTALE,
				    "overlay %s is backed by '%s', not by IMAGE %s; "
				    "use --fresh to replace it",
				    vm->overlay, qi.backing_file, vm->image);
		}
		return write_text(ctx, vm->overlay_id, id);
	}
	if ((r = create_private(ctx, vm->overlay)) < 0)
		return r;
	r = img_qcow2_create_overlay(ctx, vm->overlay, vm->image, vm->image_format);
	if (r < 0)
		return img_error_prefix(ctx, r, "creating the overlay %s", vm->overlay);
	return write_text(ctx, vm->overlay_id, id);
}

static int prepare_vars(struct img_ctx *ctx, struct img_vm *vm)
{
	struct stat a, b;

	if (stat(vm->efi_vars, &a) < 0)
		return copy_file(ctx, vm->fw.vars, vm->efi_vars, 0600);
	/* Never mix a 2M-era store with 4M code: writes would silently vanish. */
	if (stat(vm->fw.vars, &b) == 0 && a.st_size != b.st_size)
		return img_set_error(ctx, -EINVAL,
		                     "EFI variables %s (%lld bytes) do not fit the firmware's "
		                     "template %s (%lld bytes); use --fresh to start from the "
		                     "template",
		                     vm->efi_vars, (long long)a.st_size, vm->fw.vars,
		                     (long long)b.st_size);
	return 0;
}

static int prepare_empty(struct img_ctx *ctx, const char *path, uint64_t size)
{
	struct img_qcow2_opts qo = { .size = size };
	struct img_dev *dev;
	int r;

	if (access(path, F_OK) == 0)
		return 0;
	if ((r = create_private(ctx, path)) < 0)
		return r;
	r = img_dev_qcow2_create(ctx, path, &qo, &dev);
	if (r < 0)
		return img_error_prefix(ctx, r, "empty disk %s", path);
	r = img_dev_finish(dev);
	img_dev_unref(dev);
	if (r < 0) {
		unlink(path);
		return img_error_prefix(ctx, r, "empty disk %s", path);
	}
	return 0;
}

static int create_log(struct img_ctx *ctx, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	close(fd);
	return 0;
}

int vm_check_ports(struct img_ctx *ctx, const struct img_vm *vm)
{
	for (size_t i = 0; i < vm->nfwd; i++) {
		const struct vm_forward *f = &vm->fwd[i];
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(f->host_port) };
		int s = socket(AF_INET, (f->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0),
		    one = 1;

		if (s < 0)
			return img_set_error(ctx, -errno, "socket: %s", strerror(errno));
		inet_pton(AF_INET, f->host_addr, &sa.sin_addr);
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			int e = errno;

			close(s);
			return img_set_error(
			    ctx, -e, "--forward %s:%s:%u:%u: cannot use host port %u: %s%s",
			    f->udp ? "udp" : "tcp", f->host_addr, f->host_port, f->guest_port,
			    f->host_port, strerror(e),
			    e == EADDRINUSE ? " (another program listens there; pick "
			                      "another port)"
			                    : "");
		}
		close(s);
	}
	return 0;
}

int img_vm_prepare(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	int r;

	/* Refuse before anything is created. */
	if ((r = vm_check_ports(ctx, vm)) < 0)
		return r;
	if (vm->state_is_template) {
		char *parent = vm_strdup(vm, o->tmpdir);

		if ((r = mkdir_p(ctx, parent, NULL)) < 0)
			return r;
		if (!mkdtemp(vm->state_dir))
			return img_set_error(ctx, -errno, "%s: %s", vm->state_dir, strerror(errno));
		vm->state_is_template = 0;
		vm->state_created = 1;
		/* Same length as the template, so the socket checks still hold. */
		if ((r = vm_compute_paths(ctx, vm)) < 0 || (r = vm_build_argv(ctx, vm)) < 0)
			return r;
	} else {
		int made;

		if ((r = mkdir_p(ctx, vm->state_dir, &made)) < 0)
			return r;
		vm->state_created = made;
		if (!made && (r = check_own_dir(ctx, vm->state_dir, "state directory")) < 0)
			return r;
	}
	if (o->fresh) {
		unlink(vm->overlay);
		unlink(vm->overlay_id);
		unlink(vm->efi_vars);
	}
	if (o->disk_image) {
		char *d = vm_strdup(vm, vm->overlay);

		if ((r = mkdir_p(ctx, dirname(d), NULL)) < 0)
			return r;
	}
	if ((r = prepare_overlay(ctx, vm)) < 0)
		return r;
	if (vm->boot == IMG_VM_BOOT_EFI && (r = prepare_vars(ctx, vm)) < 0)
		return r;
	if (o->tpm) {
		int made;

		if ((r = mkdir_p(ctx, vm->swtpm_dir, &made)) < 0)
			return r;
		if (!made && (r = check_own_dir(ctx, vm->swtpm_dir, "TPM state directory")) < 0)
			return r;
		unlink(vm->swtpm_sock); /* a stale socket from a killed run */
	}
	for (size_t i = 0; i < o->nempty_disks; i++)
		if ((r = prepare_empty(ctx, vm->empty_paths[i], o->empty_disks[i])) < 0)
			return r;
	/* xchg: the guest writes there as it likes (security model none). */
	if ((r = state_subdir(ctx, vm->xchg_dir, 0700)) < 0)
		return r;
	if (o->host_certs) {
		char *dst = vm_printf(vm, "%s/ca-certificates.crt", vm->certs_dir);

		/* The guest sees these modes: every guest user may read the bundle
		 * (the state directory, 0700, keeps it private on the host). */
		if ((r = state_subdir(ctx, vm->certs_dir, 0755)) < 0)
			return r;
		if (unlink(dst) < 0 && errno != ENOENT)
			return img_set_error(ctx, -errno, "%s: %s", dst, strerror(errno));
		if ((r = copy_file(ctx, o->host_certs, dst, 0644)) < 0)
			return r;
	}
	if ((r = create_log(ctx, vm->console_log)) < 0)
		return r;
	if (o->serial_log && (r = create_log(ctx, o->serial_log)) < 0)
		return r;
	unlink(vm->qmp_sock);
	unlink(vm->qga_sock);
	return 0;
}
