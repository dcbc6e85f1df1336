/*
 * vm-state.c -- what a VM is started on: the image and its boot mode, the
 * accelerator, the firmware, and the per-VM state directory
 * (docs/vm-state.md): overlay qcow2 backed by IMAGE with the base image's
 * identity recorded beside it, a copy of the EFI variable template, swtpm state,
 * empty disks, the console log and sockets. Directories 0700, files 0600.
 * IMAGE itself is only ever opened read-only.
 */
#include <fcntl.h>
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

#include "dev-qcow2-header.h"

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
	struct stat st;

	if (vm->o.accel == IMG_VM_ACCEL_TCG) {
		vm->accel = IMG_VM_ACCEL_TCG;
		vm->accel_reason = vm_strdup(vm, "asked for with --accel tcg");
		return 0;
	}
	/* Existence is not enough: open it read-write and ask (as QEMU will).
	 * KVM is a character device; anything else (a disk, a FIFO) is not
	 * even opened. */
	if (stat(dev, &st) == 0 && !S_ISCHR(st.st_mode)) {
		fd = -1;
		errno = ENODEV;
	} else {
		fd = open(dev, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	}
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
	vm->manifest_path = path;
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
		return img_set_error(
		    ctx, -EINVAL, "--boot direct needs --kernel: %s",
		    vm->manifest_path
		        ? vm_printf(vm, "the manifest %s names no system", vm->manifest_path)
		        : vm_printf(vm,
		                    "no manifest beside IMAGE %s (%s.json "
		                    "or the name without its suffix)",
		                    vm->image, vm->image));
	}
	if (access(vm->kernel, R_OK))
		return img_set_error(ctx, -errno, "kernel %s: %s", vm->kernel, strerror(errno));
	if (vm->initrd && access(vm->initrd, R_OK))
		return img_set_error(ctx, -errno, "initrd %s: %s", vm->initrd, strerror(errno));
	/* The last console= is the preferred one: serial when headless, the
	 * screen with graphics (the reference orders qemu.consoles this way). */
	append = vm_strdup(vm, base);
	/* --console: the reference's qemu.consoles, as given (last preferred). */
	for (size_t i = 0; append && i < o->nconsoles; i++)
		append =
		    vm_printf(vm, "%s%sconsole=%s", append, *append ? " " : "", o->consoles[i]);
	if (append && !o->nconsoles && !strstr(append, "console="))
		append = vm_printf(vm, "%s%s%s", append, *append ? " " : "",
		                   o->graphics ? "console=ttyS0,115200 console=tty0"
		                               : "console=ttyS0,115200");
	if (o->kernel_params && *o->kernel_params)
		append = vm_printf(vm, "%s %s", append, o->kernel_params);
	vm->append = append;
	return vm->append ? 0 : -ENOMEM;
}

/* Known firmware paths, only when no descriptor fits (and said aloud).
 * secure: the IMG_VM_SB_* level the pair gives. */
static const struct {
	const char *code, *vars;
	int secure;
} fallback_fw[] = {
	{ "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd", IMG_VM_SB_OFF },
	{ "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd", IMG_VM_SB_OFF },
	{ "/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd", IMG_VM_SB_OFF },
	{ "/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd",
	  IMG_VM_SB_OFF },
	{ "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd",
	  IMG_VM_SB_SETUP },
	{ "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
	  IMG_VM_SB_ENROLLED },
	{ "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd",
	  IMG_VM_SB_SETUP },
	{ "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
	  IMG_VM_SB_ENROLLED },
};

/* --firmware FILE --efi-vars-template FILE: the reference's efi.firmware and
 * efi.variables, taken as they are (format from the magic). */
static int firmware_files(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	uint64_t sz;
	char *cf, *vf;
	int r;

	if (!o->efi_vars_template)
		return img_set_error(ctx, -EINVAL,
		                     "--firmware needs --efi-vars-template FILE (the variable "
		                     "store that goes with this firmware build)");
	if ((r = probe_format(ctx, o->firmware, "--firmware", &cf, &sz, vm)) < 0 ||
	    (r = probe_format(ctx, o->efi_vars_template, "--efi-vars-template", &vf, &sz, vm)) < 0)
		return r;
	vm->fw.code = realpath(o->firmware, NULL);
	vm->fw.vars = realpath(o->efi_vars_template, NULL);
	vm->fw.code_format = strdup(cf);
	vm->fw.vars_format = strdup(vf);
	if (!vm->fw.code || !vm->fw.vars || !vm->fw.code_format || !vm->fw.vars_format)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	/* As the reference: a Secure Boot build needs SMM (x86). */
	vm->fw.secure_boot = vm->fw.requires_smm = !!o->secure_boot;
	vm->fw.enrolled_keys = o->secure_boot && o->enrolled_keys;
	vm->have_fw = 1;
	return 0;
}

static int resolve_firmware(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	const char *defdirs[3] = { "/usr/share/qemu/firmware", "/etc/qemu/firmware", NULL };
	const char *const *dirs = o->firmware_dirs;
	size_t ndirs = o->nfirmware_dirs;
	int sb = !o->secure_boot    ? IMG_VM_SB_OFF
	         : o->enrolled_keys ? IMG_VM_SB_ENROLLED
	                            : IMG_VM_SB_SETUP;
	int r;

	if (o->firmware)
		return firmware_files(ctx, vm);
	if (!dirs) {
		if (o->config_home)
			defdirs[2] = vm_printf(vm, "%s/qemu/firmware", o->config_home);
		dirs = defdirs;
		ndirs = 3;
	}
	r = img_vm_firmware_find(ctx, dirs, ndirs, sb, &vm->fw);
	if (r == 0) {
		vm->have_fw = 1;
		return 0;
	}
	if (r != -ENOENT)
		return r;
	if (!o->no_firmware_fallback) {
		for (size_t i = 0; i < IMG_ARRAY_SIZE(fallback_fw); i++) {
			if (fallback_fw[i].secure != sb || access(fallback_fw[i].code, R_OK) ||
			    access(fallback_fw[i].vars, R_OK))
				continue;
			img_ctx_clear_error(ctx);
			vm->fw.code = strdup(fallback_fw[i].code);
			vm->fw.vars = strdup(fallback_fw[i].vars);
			vm->fw.code_format = strdup("raw");
			vm->fw.vars_format = strdup("raw");
			vm->fw.secure_boot = vm->fw.requires_smm = sb != IMG_VM_SB_OFF;
			vm->fw.enrolled_keys = sb == IMG_VM_SB_ENROLLED;
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
		    "--secure-boot: no UEFI firmware with Secure Boot %s found (QEMU firmware "
		    "descriptors in /usr/share/qemu/firmware; Debian: install ovmf)",
		    sb == IMG_VM_SB_ENROLLED ? "and enrolled keys"
		                             : "in setup mode (no keys enrolled; --enrolled-keys "
		                               "for firmware with keys)");
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

	/* The disk QEMU writes: IMAGE's overlay, or with --system the root disk
	 * (none with --no-root-disk). NIX_DISK_IMAGE as the reference resolves
	 * it: readlink -f. */
	if (o->system && o->no_root_disk)
		vm->overlay = NULL;
	else if (o->disk_image)
		vm->overlay = vm_readlink_f(vm, o->disk_image);
	else
		vm->overlay = o->system ? vm_printf(vm, "%s/%s.qcow2", s, o->name)
		                        : vm_printf(vm, "%s/disk.qcow2", s);
	if (vm->overlay) {
		vm->overlay_id = vm_printf(vm, "%s.base-id", vm->overlay);
		vm->overlay_name = vm_strdup(vm, basename(vm_strdup(vm, vm->overlay)));
		vm->overlay_id_name = vm_printf(vm, "%s.base-id", vm->overlay_name);
	}
	vm->efi_vars =
	    o->efi_vars ? vm_strdup(vm, o->efi_vars) : vm_printf(vm, "%s/efi-vars.fd", s);
	vm->vars_name =
	    o->efi_vars ? vm_strdup(vm, basename(vm_strdup(vm, vm->efi_vars))) : "efi-vars.fd";
	vm->swtpm_dir = o->swtpm_dir ? vm_strdup(vm, o->swtpm_dir) : vm_printf(vm, "%s/swtpm", s);
	vm->swtpm_sock = vm_printf(vm, "%s/swtpm.ctrl", vm->swtpm_dir);
	vm->swtpm_log = vm_printf(vm, "%s/swtpm.log", vm->swtpm_dir);
	vm->console_log = vm_printf(vm, "%s/console.log", s);
	vm->qmp_sock = vm_printf(vm, "%s/qmp.sock", s);
	vm->qga_sock = vm_printf(vm, "%s/qga.sock", s);
	vm->certs_dir = vm_printf(vm, "%s/certs", s);
	vm->xchg_dir = o->xchg_dir ? vm_readlink_f(vm, o->xchg_dir) : vm_printf(vm, "%s/xchg", s);
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
	if (o->system && (r = vm_system_paths(ctx, vm)) < 0)
		return r;
	if (o->system && vm->root_disk && access(vm->root_disk, F_OK) == 0) {
		uint64_t size;

		/* an existing root disk (NIX_DISK_IMAGE may name a raw one) */
		if ((r = probe_format(ctx, vm->root_disk, "root disk", &vm->root_disk_format, &size,
		                      vm)) < 0)
			return r;
	}
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

/* --drive FILE[,KEY=VALUE...]: FILE up to the first single ',' (",," is a
 * comma in it), then drive options QEMU may take from a user: no file=,
 * id= or if= (they are ours). format= is taken, else read off the magic. */
static int parse_drives(struct img_ctx *ctx, struct img_vm *vm)
{
	static const char *const keys[] = { "format",       "cache",        "aio",    "discard",
		                            "readonly",     "werror",       "rerror", "snapshot",
		                            "copy-on-read", "detect-zeroes" };
	const struct img_vm_opts *o = &vm->o;
	size_t n = o->ndrives;

	vm->drive_files = vm_keep(vm, img_malloc0(sizeof(char *) * (n + 1)));
	vm->drive_formats = vm_keep(vm, img_malloc0(sizeof(char *) * (n + 1)));
	vm->drive_opts = vm_keep(vm, img_malloc0(sizeof(char *) * (n + 1)));
	if (!vm->drive_files || !vm->drive_formats || !vm->drive_opts)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *spec = o->drives[i];
		char *file = vm_keep(vm, img_malloc0(strlen(spec) + 1)), *q = file, *opts = NULL;
		char *fmt = NULL, *rest = vm_strdup(vm, ""), *abs;
		const char *p = spec;
		uint64_t sz;
		int r;

		if (!file || !rest)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		for (; *p; p++) {
			if (*p == ',' && p[1] == ',') {
				*q++ = *p++;
			} else if (*p == ',') {
				opts = vm_strdup(vm, p + 1);
				break;
			} else {
				*q++ = *p;
			}
		}
		for (char *kv = opts ? strtok(opts, ",") : NULL; kv; kv = strtok(NULL, ",")) {
			char *eq = strchr(kv, '=');
			int ok = 0;

			if (eq) {
				*eq = '\0';
				for (size_t k = 0; k < IMG_ARRAY_SIZE(keys); k++)
					ok |= !strcmp(kv, keys[k]);
				ok = ok && eq[1] &&
				     !eq[1 + strspn(eq + 1,
				                    "abcdefghijklmnopqrstuvwxyz"
				                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")];
			}
			if (!ok)
				return img_set_error(
				    ctx, -EINVAL,
				    "--drive %s: '%s%s%s' is not one of the drive "
				    "options format, cache, aio, discard, readonly, "
				    "werror, rerror, snapshot, copy-on-read, "
				    "detect-zeroes (KEY=VALUE)",
				    spec, kv, eq ? "=" : "", eq ? eq + 1 : "");
			if (!strcmp(kv, "format"))
				fmt = vm_strdup(vm, eq + 1);
			else
				rest =
				    vm_printf(vm, "%s%s%s=%s", rest, *rest ? "," : "", kv, eq + 1);
		}
		if (!(abs = absolute(vm, file)))
			return img_set_error(ctx, -errno, "--drive %s: %s", file, strerror(errno));
		if (!fmt && (r = probe_format(ctx, abs, "--drive", &fmt, &sz, vm)) < 0)
			return r;
		vm->drive_files[i] = abs;
		vm->drive_formats[i] = fmt;
		vm->drive_opts[i] = rest && *rest ? rest : NULL;
	}
	return 0;
}

int vm_resolve(struct img_ctx *ctx, struct img_vm *vm)
{
	struct img_vm_opts *o = &vm->o;
	int r, decided = 0;

	if (o->system) {
		/* TOPLEVEL: closure, kernel command line, name (vm-system.c). */
		if ((r = vm_resolve_system(ctx, vm)) < 0)
			return r;
		if (o->store_image && o->store_image_auto)
			return img_set_error(ctx, -EINVAL, "--store-image given twice");
		/* The host store, unless the guest gets the store image. */
		if (!o->store_image && !o->store_image_auto &&
		    (r = vm_add_share(ctx, vm, "nix-store", vm->store_host, "/nix/.ro-store",
		                      "none")) < 0)
			return r;
	} else {
		if (!o->image)
			return img_set_error(ctx, -EINVAL, "no IMAGE given (or --system TOPLEVEL)");
		if (o->store_image_auto)
			return img_set_error(
			    ctx, -EINVAL,
			    "--store-image auto builds the store image of --system "
			    "TOPLEVEL's closure; with IMAGE, give the store image "
			    "FILE");
		/* The image: must exist and be a disk image we may use. */
		vm->image = absolute(vm, o->image);
		if (!vm->image)
			return img_set_error(ctx, -errno, "IMAGE %s: %s", o->image,
			                     strerror(errno));
		if ((r = probe_format(ctx, vm->image, "IMAGE", &vm->image_format, &vm->image_size,
		                      vm)) < 0)
			return r;
	}
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

	if ((r = parse_drives(ctx, vm)) < 0)
		return r;

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

	/* Boot mode: --system, option, manifest, partition table. */
	if (o->system) {
		/* decided by vm_resolve_system() */
	} else if (o->boot != IMG_VM_BOOT_AUTO) {
		vm->boot = o->boot;
		vm->boot_source = "option";
		/* --boot direct without --kernel boots the manifest's system. */
		if (o->boot == IMG_VM_BOOT_DIRECT && !o->kernel &&
		    (r = boot_from_manifest(ctx, vm, &decided)) < 0)
			return r;
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
	if (o->bios_file && vm->boot == IMG_VM_BOOT_EFI)
		return img_set_error(ctx, -EINVAL,
		                     "--bios-file: this VM boots with UEFI (%s); a BIOS image "
		                     "(e.g. qboot) is for --boot bios or direct boot",
		                     vm->boot_source);
	if ((o->firmware || o->efi_vars_template) && vm->boot != IMG_VM_BOOT_EFI)
		return img_set_error(ctx, -EINVAL,
		                     "--firmware/--efi-vars-template are UEFI firmware; this VM "
		                     "boots %s",
		                     vm->boot == IMG_VM_BOOT_BIOS ? "with BIOS" : "directly");
	if (o->enrolled_keys && !o->secure_boot)
		return img_set_error(ctx, -EINVAL, "--enrolled-keys needs --secure-boot");
	if (o->secure_boot && vm->boot != IMG_VM_BOOT_EFI)
		return img_set_error(ctx, -EINVAL,
		                     "--secure-boot needs UEFI boot (this VM boots %s)",
		                     vm->boot == IMG_VM_BOOT_BIOS ? "with BIOS" : "directly");
	if (vm->boot == IMG_VM_BOOT_DIRECT && !o->system && (r = resolve_direct(ctx, vm)) < 0)
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

/*
 * Everything below reaches the state through the directories held in
 * struct img_vm (vm-dir.c): no path is followed, no existing directory is
 * changed, and a file is reused or removed only when it is a regular file
 * of the caller's that carries our mark. @dry (--dry-run): check the same
 * way, change nothing.
 */

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

/* Up to @len - 1 bytes of @fd from its start, NUL-terminated; -1 on error. */
static ssize_t read_head(int fd, char *buf, size_t len)
{
	ssize_t n = pread(fd, buf, len - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
	return n;
}

/* Our record of the base image (identity() above). */
static int is_record(const char *s)
{
	return !strncmp(s, "image=/", 7) && strstr(s, "\ndev=") && strstr(s, "\nino=") &&
	       strstr(s, "\nmtime=");
}

/* A UEFI variable store: a firmware volume ("_FVH" at byte 40 of its
 * header, PI spec vol. 3, EFI_FIRMWARE_VOLUME_HEADER) or a copy the size
 * of this firmware's template. */
static int is_vars(struct img_vm *vm, int fd, const struct stat *st)
{
	struct stat t;
	char sig[4];

	if (pread(fd, sig, 4, 40) == 4 && !memcmp(sig, "_FVH", 4))
		return 1;
	return vm->have_fw && stat(vm->fw.vars, &t) == 0 && t.st_size == st->st_size;
}

/* A qcow2 overlay: the magic, and a record beside it or a backing file. */
static int is_overlay(struct img_ctx *ctx, struct img_vm *vm, int fd)
{
	struct qcow2_hdr h;
	struct stat st;
	uint8_t m[4];
	int r;

	if (pread(fd, m, 4, 0) != 4 || memcmp(m, "QFI\xfb", 4))
		return 0;
	if (vm_dir_lstat(ctx, vm, vm->disk_dir, vm->overlay_id_name, &st) == 1 &&
	    S_ISREG(st.st_mode))
		return 1;
	r = qcow2_read_header(ctx, vm->overlay, fd, &h);
	img_ctx_clear_error(ctx);
	return r == 0 && h.backing_file[0];
}

/*
 * Is a QEMU using the disk @fd is open on? QEMU's image locking takes
 * open-file-description locks on bytes 100.. and 200.. of every image it
 * opens; a lock test over the whole file sees them, whichever state dir (or
 * other launcher) that QEMU belongs to.
 */
static int in_use(struct img_ctx *ctx, const char *path, int fd)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
		return 0;
	return img_set_error(ctx, -EBUSY,
	                     "%s is in use: a running QEMU holds a lock on it; stop that VM first",
	                     path);
}

/* --fresh: may @name go? A regular file of ours that @ours() recognises. */
static int fresh_check(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                       const char *name, const char *what, int kind)
{
	char *path = vm_dir_name(vm, d, name), buf[256];
	struct stat st;
	int fd, r, ok;

	if (d->fd < 0 || (r = vm_dir_lstat(ctx, vm, d, name, &st)) == 0)
		return 0;
	if (r < 0)
		return r;
	if ((r = vm_check_mine(ctx, path, &st, S_IFREG, "remove")) < 0 ||
	    (r = vm_dir_open_file(ctx, vm, d, name, O_RDONLY, &fd)) < 0)
		return img_error_prefix(ctx, r, "--fresh");
	ok = kind == 0   ? is_overlay(ctx, vm, fd)
	     : kind == 1 ? read_head(fd, buf, sizeof(buf)) > 0 && is_record(buf)
	                 : is_vars(vm, fd, &st);
	r = ok && kind != 1 ? in_use(ctx, path, fd) : 0;
	close(fd);
	if (r < 0)
		return img_error_prefix(ctx, r, "--fresh");
	if (!ok)
		return img_set_error(ctx, -EPERM,
		                     "--fresh: %s is not %s vmlaunch made (%s); refusing to remove "
		                     "it",
		                     path, what,
		                     kind == 0   ? "no qcow2 overlay header, no base-id record"
		                     : kind == 1 ? "not a base-id record"
		                                 : "no firmware volume header, not the size of "
		                                   "the firmware's template");
	return 1;
}

static int fresh(struct img_ctx *ctx, struct img_vm *vm, int dry)
{
	int a, b, c = 0;

	/* All checked before any is removed: a refusal leaves everything. */
	if ((a = fresh_check(ctx, vm, vm->disk_dir, vm->overlay_name, "an overlay", 0)) < 0 ||
	    (b = fresh_check(ctx, vm, vm->disk_dir, vm->overlay_id_name, "a base-id record", 1)) <
	        0 ||
	    (vm->boot == IMG_VM_BOOT_EFI && (c = fresh_check(ctx, vm, vm->vars_dir, vm->vars_name,
	                                                     "an EFI variable store", 2)) < 0))
		return a < 0 ? a : b < 0 ? b : c;
	if (dry)
		return 0;
	if ((a && unlinkat(vm->disk_dir->fd, vm->overlay_name, 0) < 0) ||
	    (b && unlinkat(vm->disk_dir->fd, vm->overlay_id_name, 0) < 0) ||
	    (c && unlinkat(vm->vars_dir->fd, vm->vars_name, 0) < 0))
		return img_set_error(ctx, -errno, "--fresh: %s", strerror(errno));
	return 0;
}

/*
 * Copy @from into the new file @name of @d. Firmware templates and CA
 * bundles are the host's: read as given.
 */
static int copy_file(struct img_ctx *ctx, struct img_vm *vm, const char *from,
                     const struct vm_dir *d, const char *name, mode_t mode)
{
	char buf[65536];
	int in = open(from, O_RDONLY | O_CLOEXEC), out, r;
	ssize_t n;

	if (in < 0)
		return img_set_error(ctx, -errno, "%s: %s", from, strerror(errno));
	if ((r = vm_dir_create(ctx, vm, d, name, mode, &out)) < 0) {
		close(in);
		return r;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n) {
			n = -1;
			break;
		}
	if (n < 0 || fsync(out) < 0) {
		int e = errno ? errno : EIO;

		vm_dir_unlink_fd(d, name, out);
		close(in);
		close(out);
		return img_set_error(ctx, -e, "copying %s to %s: %s", from,
		                     vm_dir_name(vm, d, name), strerror(e));
	}
	close(in);
	close(out);
	return 0;
}

/* A new file with @text (the old one, if a regular file of ours, replaced). */
static int write_text(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                      const char *name, const char *text)
{
	int fd, r;

	if ((r = vm_dir_remove(ctx, vm, d, name, S_IFREG)) < 0 ||
	    (r = vm_dir_create(ctx, vm, d, name, 0600, &fd)) < 0)
		return r;
	r = img_pwrite_full(fd, text, strlen(text), 0);
	if (r < 0)
		vm_dir_unlink_fd(d, name, fd);
	close(fd);
	return r < 0 ? img_set_error(ctx, r, "%s: %s", vm_dir_name(vm, d, name), strerror(-r)) : 0;
}

/*
 * A new qcow2 @name in @d: an overlay of IMAGE, or empty of @size. The
 * file is made here (O_EXCL, 0600); the writer opens it as
 * /proc/self/fd/N, so it writes into exactly that file whatever the name
 * points to by then.
 */
static int create_qcow2(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                        const char *name, int overlay, uint64_t size)
{
	char *path = vm_dir_name(vm, d, name), *proc;
	int fd, r;

	if ((r = vm_dir_create(ctx, vm, d, name, 0600, &fd)) < 0)
		return r;
	proc = vm_printf(vm, "/proc/self/fd/%d", fd);
	if (!proc) {
		r = img_set_error(ctx, -ENOMEM, "out of memory");
	} else if (overlay) {
		r = img_qcow2_create_overlay(ctx, proc, vm->image, vm->image_format);
	} else {
		struct img_qcow2_opts qo = { .size = size };
		struct img_dev *dev;

		r = img_dev_qcow2_create(ctx, proc, &qo, &dev);
		if (r == 0) {
			r = img_dev_finish(dev);
			img_dev_unref(dev);
		}
	}
	if (r < 0) {
		vm_dir_unlink_fd(d, name, fd);
		r = img_error_prefix(ctx, r, "creating %s", path);
	}
	close(fd);
	return r;
}

/*
 * An existing overlay is QEMU's writable disk: check it on every start.
 * Ours = a sound qcow2 header, backed by exactly IMAGE (its absolute path)
 * in IMAGE's format and nothing else (no external data file, which
 * qcow2_read_header refuses), tables inside the file.
 */
static int check_overlay(struct img_ctx *ctx, struct img_vm *vm, int fd)
{
	const char *fix = "; start with --fresh to make a new one (discards the VM's disk "
	                  "changes and EFI variables)";
	struct qcow2_hdr h;
	struct img_dev *dev;
	uint8_t m[4];
	char *proc;
	int r;

	if (pread(fd, m, 4, 0) != 4 || memcmp(m, "QFI\xfb", 4))
		return img_set_error(
		    ctx, -EINVAL,
		    "overlay %s is not a qcow2 image: vmlaunch did not make it and "
		    "does not replace it (move it away, or name another file)",
		    vm->overlay);
	if ((r = qcow2_read_header(ctx, vm->overlay, fd, &h)) < 0)
		return img_set_error(ctx, r, "%s%s", vm_strdup(vm, img_ctx_error(ctx)), fix);
	if (!h.backing_file[0])
		return img_set_error(ctx, -ESTALE,
		                     "overlay %s has no backing file: not an overlay of "
		                     "IMAGE %s%s",
		                     vm->overlay, vm->image, fix);
	if (strcmp(h.backing_file, vm->image))
		return img_set_error(ctx, -ESTALE,
		                     "overlay %s is backed by '%s', not by IMAGE %s%s", vm->overlay,
		                     h.backing_file, vm->image, fix);
	if (strcmp(h.backing_format, vm->image_format))
		return img_set_error(ctx, -ESTALE,
		                     "overlay %s names its backing file's format as '%s', but "
		                     "IMAGE %s is %s%s",
		                     vm->overlay, h.backing_format[0] ? h.backing_format : "(none)",
		                     vm->image, vm->image_format, fix);
	/* The L1 table too, through the file we hold. */
	proc = vm_printf(vm, "/proc/self/fd/%d", fd);
	if (!proc)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	r = img_dev_qcow2_open(ctx, proc, IMG_QCOW2_ALLOW_BACKING, &dev);
	if (r < 0)
		return img_set_error(ctx, r, "overlay %s: %s%s", vm->overlay,
		                     vm_strdup(vm, img_ctx_error(ctx)), fix);
	img_dev_unref(dev);
	return 0;
}

static int prepare_overlay(struct img_ctx *ctx, struct img_vm *vm, int dry)
{
	struct vm_dir *d = vm->disk_dir;
	char *id = identity(vm), old[4096];
	struct stat st;
	int r, fd;

	if (!id)
		return img_set_error(ctx, -errno, "IMAGE %s: %s", vm->image, strerror(errno));
	if (d->fd < 0)
		return 0; /* --dry-run, not made yet */
	if ((r = vm_dir_lstat(ctx, vm, d, vm->overlay_name, &st)) < 0)
		return r;
	if (r == 0) {
		if (dry)
			return 0;
		if ((r = create_qcow2(ctx, vm, d, vm->overlay_name, 1, 0)) < 0)
			return r;
		return write_text(ctx, vm, d, vm->overlay_id_name, id);
	}
	if ((r = vm_dir_open_file(ctx, vm, d, vm->overlay_name, O_RDONLY, &fd)) < 0)
		return r;
	if (st.st_nlink != 1) {
		close(fd);
		return img_set_error(ctx, -EPERM,
		                     "overlay %s has %lu hard links; one vmlaunch made has one, "
		                     "refusing to let the VM write into it",
		                     vm->overlay, (unsigned long)st.st_nlink);
	}
	r = check_overlay(ctx, vm, fd);
	if (r == 0)
		r = in_use(ctx, vm->overlay, fd);
	close(fd);
	if (r < 0)
		return r;
	if ((r = vm_dir_lstat(ctx, vm, d, vm->overlay_id_name, &st)) < 0)
		return r;
	if (r == 0) /* no record (e.g. made by the NixOS runner): backed by IMAGE, adopt it */
		return dry ? 0 : write_text(ctx, vm, d, vm->overlay_id_name, id);
	if ((r = vm_dir_open_file(ctx, vm, d, vm->overlay_id_name, O_RDONLY, &fd)) < 0)
		return r;
	read_head(fd, old, sizeof(old));
	close(fd);
	if (!strcmp(old, id))
		return 0;
	return img_set_error(ctx, -ESTALE,
	                     "IMAGE %s changed since the overlay %s was made on it (identity "
	                     "in %s differs); the VM's writes belong to the old image. Start "
	                     "again with --fresh (discards the VM's disk changes and EFI "
	                     "variables)",
	                     vm->image, vm->overlay, vm->overlay_id);
}

static int prepare_vars(struct img_ctx *ctx, struct img_vm *vm, int dry)
{
	struct vm_dir *d = vm->vars_dir;
	struct stat a, b;
	int r, fd;

	if (d->fd < 0)
		return 0;
	if ((r = vm_dir_lstat(ctx, vm, d, vm->vars_name, &a)) < 0)
		return r;
	if (r == 0)
		return dry ? 0 : copy_file(ctx, vm, vm->fw.vars, d, vm->vars_name, 0600);
	if ((r = vm_dir_open_file(ctx, vm, d, vm->vars_name, O_RDONLY, &fd)) < 0)
		return r;
	close(fd);
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

/* Empty disks are new at every start, as the reference's (made in its fresh
 * TMPDIR), unless kept (--keep-empty-disks); an old one is removed only if
 * it is an empty disk of ours: a qcow2 without a backing file. */
static int prepare_empty(struct img_ctx *ctx, struct img_vm *vm, const char *name, uint64_t size,
                         int keep, int dry)
{
	struct qcow2_hdr h;
	struct stat st;
	int r, fd;

	if (vm->state.fd < 0)
		return 0;
	if ((r = vm_dir_lstat(ctx, vm, &vm->state, name, &st)) < 0)
		return r;
	if (r == 0)
		return dry ? 0 : create_qcow2(ctx, vm, &vm->state, name, 0, size);
	if ((r = vm_dir_open_file(ctx, vm, &vm->state, name, O_RDONLY, &fd)) < 0)
		return r;
	r = qcow2_read_header(ctx, vm_dir_name(vm, &vm->state, name), fd, &h);
	close(fd);
	if (r == 0 && h.backing_file[0])
		r = img_set_error(ctx, -EPERM, "empty disk %s has a backing file '%s'; refusing it",
		                  vm_dir_name(vm, &vm->state, name), h.backing_file);
	if (r < 0 || keep || dry)
		return r;
	if ((r = vm_dir_remove(ctx, vm, &vm->state, name, S_IFREG)) < 0)
		return r;
	return create_qcow2(ctx, vm, &vm->state, name, 0, size);
}

/* A log QEMU appends to: a new file (an old regular one of ours replaced). */
static int prepare_log(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                       const char *name, int dry)
{
	struct stat st;
	int r, fd;

	if (d->fd < 0)
		return 0;
	if (dry) {
		r = vm_dir_lstat(ctx, vm, d, name, &st);
		return r <= 0
		           ? r
		           : vm_check_mine(ctx, vm_dir_name(vm, d, name), &st, S_IFREG, "replace");
	}
	if ((r = vm_dir_remove(ctx, vm, d, name, S_IFREG)) < 0 ||
	    (r = vm_dir_create(ctx, vm, d, name, 0600, &fd)) < 0)
		return r;
	close(fd);
	return 0;
}

/*
 * --serial-log FILE: the user's output, truncated like a shell's '>' when
 * it is a regular file of theirs with one link; never a link, device or
 * FIFO, never chmodded. Kept open for vm-run.c.
 */
static int prepare_serial_log(struct img_ctx *ctx, struct img_vm *vm, int dry)
{
	const char *p = vm->o.serial_log;
	struct stat st;
	int fd;

	if (dry) {
		if (lstat(p, &st) < 0)
			return 0;
		if (vm_check_mine(ctx, p, &st, S_IFREG, "write") < 0)
			return img_error_prefix(ctx, -EPERM, "--serial-log");
		return 0;
	}
	fd = open(p, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);
	if (fd < 0) {
		if ((errno == ELOOP || errno == ENXIO) && lstat(p, &st) == 0)
			return img_error_prefix(ctx, vm_check_mine(ctx, p, &st, S_IFREG, "write"),
			                        "--serial-log");
		return img_set_error(ctx, -errno, "--serial-log %s: %s", p, strerror(errno));
	}
	if (fstat(fd, &st) < 0 || vm_check_mine(ctx, p, &st, S_IFREG, "write") < 0) {
		close(fd);
		return img_error_prefix(ctx, -EPERM, "--serial-log");
	}
	if (st.st_nlink != 1) {
		close(fd);
		return img_set_error(ctx, -EPERM,
		                     "--serial-log %s has %lu hard links; refusing to truncate it",
		                     p, (unsigned long)st.st_nlink);
	}
	if (ftruncate(fd, 0) < 0) {
		int e = errno;

		close(fd);
		return img_set_error(ctx, -e, "--serial-log %s: %s", p, strerror(e));
	}
	fcntl(fd, F_SETFL, O_APPEND);
	vm->serial_fd = fd;
	return 0;
}

/* A stale socket of a killed run goes; anything else there is refused
 * (QEMU and swtpm would unlink whatever is in the way of their socket). */
static int prepare_sock(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                        const char *name, int dry)
{
	struct stat st;
	int r;

	if (d->fd < 0)
		return 0;
	if (!dry)
		return vm_dir_remove(ctx, vm, d, name, S_IFSOCK);
	r = vm_dir_lstat(ctx, vm, d, name, &st);
	return r <= 0 ? r : vm_check_mine(ctx, vm_dir_name(vm, d, name), &st, S_IFSOCK, "remove");
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

/* A directory that may not exist yet (--dry-run): open it if it does. */
static int open_existing(struct img_ctx *ctx, const char *path, const char *what,
                         enum vm_dir_kind kind, struct vm_dir *d)
{
	struct stat st;

	vm_dir_init(d);
	d->path = path;
	if (lstat(path, &st) < 0 && errno == ENOENT)
		return 0;
	return vm_dir_open(ctx, path, what, kind, NULL, d);
}

/* Open (making what is missing) and check the directories, take the lock. */
static int open_dirs(struct img_ctx *ctx, struct img_vm *vm, int dry)
{
	const struct img_vm_opts *o = &vm->o;
	int r, made;

	if (vm->state_is_template) {
		if (dry)
			return vm_dir_check(ctx, o->tmpdir, "TMPDIR", VM_DIR_HOLDER);
		if ((r = vm_dir_open(ctx, o->tmpdir, "TMPDIR", VM_DIR_HOLDER, &made, &vm->tmp)) < 0)
			return r;
		if (!mkdtemp(vm->state_dir))
			return img_set_error(ctx, -errno, "%s: %s", vm->state_dir, strerror(errno));
		vm->state_is_template = 0;
		vm->state_created = 1;
		/* Same length as the template, so the socket checks still hold. */
		if ((r = vm_compute_paths(ctx, vm)) < 0 || (r = vm_build_argv(ctx, vm)) < 0)
			return r;
		r = vm_dir_open(ctx, vm->state_dir, "state directory", VM_DIR_OWN, NULL,
		                &vm->state);
	} else if (dry) {
		r = open_existing(ctx, vm->state_dir, "state directory", VM_DIR_OWN, &vm->state);
	} else {
		r = vm_dir_open(ctx, vm->state_dir, "state directory", VM_DIR_OWN, &made,
		                &vm->state);
		vm->state_created = r == 0 && made;
	}
	if (r < 0)
		return r;
	/* Before anything in it is looked at: one vmlaunch per state dir. */
	if (vm->state.fd >= 0 && (r = dry ? vm_dir_probe_lock(ctx, &vm->state)
	                                  : vm_dir_lock(ctx, vm, &vm->state, &vm->lock_fd)) < 0)
		return r;
	if (o->disk_image && vm->overlay) {
		char *dir = vm_strdup(vm, vm->overlay);

		dir = vm_strdup(vm, dirname(dir));
		r = dry ? open_existing(ctx, dir, "NIX_DISK_IMAGE", VM_DIR_HOLDER, &vm->disk)
		        : vm_dir_open(ctx, dir, "NIX_DISK_IMAGE", VM_DIR_HOLDER, &made, &vm->disk);
		if (r < 0)
			return r;
		vm->disk_dir = &vm->disk;
	}
	if (o->efi_vars && vm->boot == IMG_VM_BOOT_EFI) {
		char *dir = vm_strdup(vm, vm->efi_vars);

		dir = vm_strdup(vm, dirname(dir));
		r = dry ? open_existing(ctx, dir, "NIX_EFI_VARS", VM_DIR_HOLDER, &vm->vars)
		        : vm_dir_open(ctx, dir, "NIX_EFI_VARS", VM_DIR_HOLDER, &made, &vm->vars);
		if (r < 0)
			return r;
		vm->vars_dir = &vm->vars;
	}
	if (o->tpm) {
		const char *what =
		    o->swtpm_dir ? "TPM state directory (NIX_SWTPM_DIR)" : "TPM state directory";

		if (dry || o->swtpm_dir)
			r = dry ? open_existing(ctx, vm->swtpm_dir, what, VM_DIR_OWN, &vm->tpm)
			        : vm_dir_open(ctx, vm->swtpm_dir, what, VM_DIR_OWN, &made,
			                      &vm->tpm);
		else
			r = vm_dir_subdir(ctx, &vm->state, "swtpm", 0700, vm->swtpm_dir, &vm->tpm);
		if (r < 0)
			return r;
		vm->tpm_dir = &vm->tpm;
	}
	return 0;
}

/* A subdirectory of the state the guest sees through 9p (xchg, certs). */
static int prepare_subdir(struct img_ctx *ctx, struct img_vm *vm, const char *name,
                          const char *path, mode_t mode, const char *file, const char *from,
                          int dry)
{
	struct vm_dir sub;
	struct stat st;
	int r;

	if (vm->state.fd < 0)
		return 0;
	if (dry) {
		r = vm_dir_lstat(ctx, vm, &vm->state, name, &st);
		if (r > 0 && (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()))
			return img_set_error(ctx, -EPERM,
			                     "%s is a %s of uid %u, not a directory vmlaunch made",
			                     path, vm_file_kind(st.st_mode), (unsigned)st.st_uid);
		return r < 0 ? r : 0;
	}
	if ((r = vm_dir_subdir(ctx, &vm->state, name, mode, path, &sub)) < 0)
		return r;
	if (file && ((r = vm_dir_remove(ctx, vm, &sub, file, S_IFREG)) < 0 ||
	             (r = copy_file(ctx, vm, from, &sub, file, 0644)) < 0)) {
		vm_dir_close(&sub);
		return r;
	}
	vm_dir_close(&sub);
	return 0;
}

/*
 * The whole state, in order; with @dry every refusal a start would meet is
 * logged as a warning instead, and nothing is made or changed.
 */
static int prepare(struct img_ctx *ctx, struct img_vm *vm, int dry)
{
	const struct img_vm_opts *o = &vm->o;
	int r = 0, made;

#define STEP(call)                                                                                 \
	do {                                                                                       \
		if ((r = (call)) < 0) {                                                            \
			if (!dry)                                                                  \
				return r;                                                          \
			img_log(ctx, IMG_LOG_WARN, "a start would refuse: %s",                     \
			        img_ctx_error(ctx));                                               \
			img_ctx_clear_error(ctx);                                                  \
		}                                                                                  \
	} while (0)

	vm->disk_dir = vm->vars_dir = vm->tpm_dir = &vm->state;
	if ((r = open_dirs(ctx, vm, dry)) < 0) {
		if (!dry)
			return r;
		img_log(ctx, IMG_LOG_WARN, "a start would refuse: %s", img_ctx_error(ctx));
		img_ctx_clear_error(ctx);
		return 0;
	}
	if (o->fresh)
		STEP(fresh(ctx, vm, dry));
	if (!o->system) /* --system: the root disk, below (vm-system.c) */
		STEP(prepare_overlay(ctx, vm, dry));
	if (vm->boot == IMG_VM_BOOT_EFI)
		STEP(prepare_vars(ctx, vm, dry));
	if (o->tpm) {
		STEP(prepare_sock(ctx, vm, vm->tpm_dir, "swtpm.ctrl", dry));
		if (vm->tpm_dir->fd >= 0) {
			struct stat st;

			r = vm_dir_lstat(ctx, vm, vm->tpm_dir, "swtpm.log", &st);
			STEP(r <= 0
			         ? r
			         : vm_check_mine(ctx, vm->swtpm_log, &st, S_IFREG, "hand swtpm"));
		}
	}
	for (size_t i = 0; i < o->nempty_disks; i++) {
		char *name = vm_printf(vm, "empty%zu.qcow2", i);

		STEP(prepare_empty(ctx, vm, name, o->empty_disks[i], o->keep_empty_disks, dry));
	}
	/* xchg: the guest writes there as it likes (security model none); with
	 * USE_TMPDIR the reference's own $TMPDIR/xchg. */
	if (o->xchg_dir)
		STEP(dry ? open_existing(ctx, vm->xchg_dir, "xchg directory (USE_TMPDIR)",
		                         VM_DIR_OWN, &vm->xchg)
		         : vm_dir_open(ctx, vm->xchg_dir, "xchg directory (USE_TMPDIR)", VM_DIR_OWN,
		                       &made, &vm->xchg));
	else
		STEP(prepare_subdir(ctx, vm, "xchg", vm->xchg_dir, 0700, NULL, NULL, dry));
	if (o->system)
		STEP(vm_prepare_system(ctx, vm, dry));
	/* The guest sees these modes: every guest user may read the bundle
	 * (the state directory, 0700, keeps it private on the host). */
	if (o->host_certs)
		STEP(prepare_subdir(ctx, vm, "certs", vm->certs_dir, 0755, "ca-certificates.crt",
		                    o->host_certs, dry));
	STEP(prepare_log(ctx, vm, &vm->state, "console.log", dry));
	if (o->serial_log)
		STEP(prepare_serial_log(ctx, vm, dry));
	STEP(prepare_sock(ctx, vm, &vm->state, "qmp.sock", dry));
	STEP(prepare_sock(ctx, vm, &vm->state, "qga.sock", dry));
#undef STEP
	return 0;
}

int vm_check_state(struct img_ctx *ctx, struct img_vm *vm)
{
	int r = prepare(ctx, vm, 1);

	vm_dir_close(&vm->state);
	vm_dir_close(&vm->disk);
	vm_dir_close(&vm->vars);
	vm_dir_close(&vm->tpm);
	return r;
}

int img_vm_prepare(struct img_ctx *ctx, struct img_vm *vm)
{
	int r;

	if (vm->state.fd >= 0)
		return img_set_error(ctx, -EINVAL, "img_vm_prepare called twice");
	/* Refuse before anything is created. */
	if ((r = vm_check_ports(ctx, vm)) < 0)
		return r;
	return prepare(ctx, vm, 0);
}
