/*
 * vm-system.c -- vmlaunch --system TOPLEVEL: what the reference's run
 * script (qemu-vm.nix startVM, `nixos-rebuild build-vm`) does, in-process
 * and in the VM's state directory.
 *
 *   - direct boot: -kernel TOPLEVEL/kernel -initrd TOPLEVEL/initrd -append
 *     "$(cat TOPLEVEL/kernel-params) init=TOPLEVEL/init regInfo=REG CONSOLES
 *     $QEMU_KERNEL_PARAMS", the reference's format exactly. REG is
 *     /tmp/xchg/.vmlaunch-registration: the closure's registration, written
 *     into the xchg share, which the guest mounts in stage 1 (the reference
 *     builds a closureInfo store path instead; there is none here);
 *   - the closure of TOPLEVEL from --closure-info DIR, or from the host's
 *     Nix database (read-only, nixdb.c);
 *   - the host store shared as tag nix-store (security model none), unless
 *     the store image is used: --store-image auto builds the closure's EROFS
 *     image (label nix-store, the reference's UUID) with the STORE recipe,
 *     cached in the state directory by closure identity;
 *   - the root disk NIX_DISK_IMAGE or STATE/NAME.qcow2, made on first start
 *     by the EMPTY recipe (ext4 labelled nixos, --disk-size, default the
 *     reference's diskSize 1024 MiB), or none (tmpfs root, diskImage = null).
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/types.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <img/closure.h>
#include <img/image.h>
#include <img/nixdb.h>

#include "vm-private.h"

/* The reference's store image UUID (qemu-vm.nix, mkfs.erofs -U). */
#define VM_STORE_UUID "eb176051-bd15-49b7-9e6b-462e0b467019"
/* Where the guest reads the registration: inside the xchg share. */
#define VM_REG_NAME  ".vmlaunch-registration"
#define VM_REG_GUEST "/tmp/xchg/" VM_REG_NAME

/* readlink -f: every symlink resolved, the last component need not exist. */
char *vm_readlink_f(struct img_vm *vm, const char *path)
{
	char cur[PATH_MAX], buf[PATH_MAX], *d, *b;

	if (strlen(path) >= sizeof(cur))
		return NULL;
	strcpy(cur, path);
	for (int hops = 0; hops < 40; hops++) {
		ssize_t n = readlink(cur, buf, sizeof(buf) - 1);
		char *dir;

		if (n < 0)
			break;
		buf[n] = '\0';
		if (buf[0] == '/') {
			strcpy(cur, buf);
			continue;
		}
		dir = strdup(cur);
		if (!dir)
			return NULL;
		if (snprintf(cur, sizeof(cur), "%s/%s", dirname(dir), buf) >= (int)sizeof(cur)) {
			free(dir);
			return NULL;
		}
		free(dir);
	}
	if (realpath(cur, buf))
		return vm_strdup(vm, buf);
	d = vm_strdup(vm, cur);
	b = vm_strdup(vm, cur);
	if (!d || !b)
		return NULL;
	if (!realpath(dirname(d), buf))
		return vm_strdup(vm, cur); /* the directory is made later */
	return vm_printf(vm, "%s/%s", strcmp(buf, "/") ? buf : "", basename(b));
}

/* The logical store path TOPLEVEL names: a store path, a link to one (a
 * `result` link points into the store, which may live under --root), or
 * a path under ROOT/STORE. */
static int resolve_toplevel(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	const char *store = vm->store_dir;
	size_t sl = strlen(store);
	char cur[PATH_MAX], buf[PATH_MAX];
	const char *p = NULL, *name;

	if (strlen(o->system) >= sizeof(cur))
		return img_set_error(ctx, -ENAMETOOLONG, "--system %s: path too long", o->system);
	strcpy(cur, o->system);
	for (int hops = 0; hops < 40 && !p; hops++) {
		ssize_t n;

		if (!strncmp(cur, store, sl) && cur[sl] == '/') {
			p = cur;
			break;
		}
		if (*vm->root && !strncmp(cur, vm->root, strlen(vm->root)) &&
		    !strncmp(cur + strlen(vm->root), store, sl) &&
		    cur[strlen(vm->root) + sl] == '/') {
			p = cur + strlen(vm->root);
			break;
		}
		n = readlink(cur, buf, sizeof(buf) - 1);
		if (n < 0)
			break;
		buf[n] = '\0';
		if (buf[0] == '/') {
			strcpy(cur, buf);
		} else {
			char *dir = strdup(cur);

			if (!dir)
				return img_set_error(ctx, -ENOMEM, "out of memory");
			snprintf(cur, sizeof(cur), "%s/%s", dirname(dir), buf);
			free(dir);
		}
	}
	if (!p && realpath(cur, buf)) {
		size_t rl = strlen(vm->root);

		if (!strncmp(buf, vm->root, rl) && !strncmp(buf + rl, store, sl) &&
		    buf[rl + sl] == '/') {
			strcpy(cur, buf + rl);
			p = cur;
		}
	}
	if (!p)
		return img_set_error(ctx, -EINVAL,
		                     "--system %s: not a store path under %s%s (nor a link to one)",
		                     o->system, vm->root, store);
	name = p + sl + 1;
	{
		const char *slash = strchr(name, '/');
		size_t nl = slash ? (size_t)(slash - name) : strlen(name);

		if (slash && slash[1])
			return img_set_error(ctx, -EINVAL,
			                     "--system %s: %s is inside a store path; give the "
			                     "toplevel itself",
			                     o->system, p);
		if (!img_store_name_valid(name, nl))
			return img_set_error(ctx, -EINVAL,
			                     "--system %s: '%.*s' is not a store path name",
			                     o->system, (int)nl, name);
		vm->sys_path = vm_printf(vm, "%s/%.*s", store, (int)nl, name);
	}
	vm->sys_host = vm_printf(vm, "%s%s", vm->root, vm->sys_path);
	return vm->sys_host ? 0 : img_set_error(ctx, -ENOMEM, "out of memory");
}

/* The reference's system.name, from the toplevel's name
 * "<hash>-nixos-system-<name>-<version>"; else the name part. */
static char *system_name(struct img_vm *vm)
{
	const char *base = strrchr(vm->sys_path, '/') + 1, *n = strchr(base, '-');
	char *s, *dash;

	n = n ? n + 1 : base;
	if (!strncmp(n, "nixos-system-", 13)) {
		s = vm_strdup(vm, n + 13);
		if (s && (dash = strrchr(s, '-')) && dash != s)
			*dash = '\0';
		return s;
	}
	return vm_strdup(vm, n);
}

/* The reference's override variable: NIXPKGS_QEMU_KERNEL_ and system.name
 * with every character but [A-Za-z0-9] made '_' (sanitizeShellIdent). */
static char *kernel_var(struct img_vm *vm)
{
	char *name = system_name(vm), *v;

	if (!name)
		return NULL;
	v = vm_printf(vm, "NIXPKGS_QEMU_KERNEL_%s", name);
	for (char *c = v ? v + 20 : NULL; c && *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9')))
			*c = '_';
	return v;
}

/* -kernel: --kernel FILE, else the variable's value (empty is unset, as
 * the reference's ${VAR:-default}), else TOPLEVEL/kernel. */
static int system_kernel(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	const char *v = NULL, *from;

	vm->kernel_var = kernel_var(vm);
	if (!vm->kernel_var)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (o->kernel) {
		v = o->kernel;
		from = vm_printf(vm, "--kernel %s", v);
	} else if (o->env && (v = o->env(o->env_user, vm->kernel_var)) && *v) {
		from = vm_printf(vm, "%s=%s", vm->kernel_var, v);
	} else {
		vm->kernel = vm_printf(vm, "%s/kernel", vm->sys_host);
		return vm->kernel ? 0 : img_set_error(ctx, -ENOMEM, "out of memory");
	}
	vm->kernel = vm_strdup(vm, v);
	vm->kernel_source = from;
	if (!vm->kernel || !from)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (access(v, R_OK) < 0)
		return img_set_error(ctx, -errno, "%s: %s", from, strerror(errno));
	return 0;
}

static int read_small(struct img_ctx *ctx, const char *path, char **out)
{
	char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	if ((size_t)n == sizeof(buf) - 1)
		return img_set_error(ctx, -EFBIG, "%s: longer than a kernel command line", path);
	buf[n] = '\0';
	if (memchr(buf, '\0', (size_t)n))
		return img_set_error(ctx, -EINVAL, "%s: holds a NUL byte", path);
	/* $(cat FILE): trailing newlines go. */
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	*out = strdup(buf);
	return *out ? 0 : img_set_error(ctx, -ENOMEM, "out of memory");
}

static int load_closure(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	int found = 0, r;

	if (o->closure_info) {
		struct img_closure_opts co = { .store_dir = vm->store_dir, .root = o->root };
		struct img_closure *c;
		char *reg;
		size_t len;

		if ((r = img_closure_load(ctx, o->closure_info, &co, &c)) < 0)
			return img_error_prefix(ctx, r, "--closure-info");
		if (!c->registration) {
			img_closure_free(c);
			return img_set_error(
			    ctx, -EINVAL,
			    "--closure-info %s: no registration file (a closureInfo "
			    "directory holds store-paths and registration)",
			    o->closure_info);
		}
		r = img_closure_registration(ctx, c, &reg, &len);
		if (r < 0) {
			img_closure_free(c);
			return r;
		}
		vm->registration = vm_keep(vm, reg);
		vm->reg_len = len;
		vm->clo_paths = vm_keep(vm, img_malloc0(sizeof(char *) * (c->npaths + 1)));
		for (size_t i = 0; vm->clo_paths && i < c->npaths; i++)
			vm->clo_paths[i] = vm_strdup(vm, c->paths[i]);
		vm->nclo = c->npaths;
		img_closure_free(c);
	} else {
		struct img_nixdb_closure nc;

		if ((r = img_nixdb_closure(ctx, vm->nix_db, vm->sys_path, &nc)) < 0)
			return r;
		vm->registration = vm_keep(vm, nc.registration);
		vm->reg_len = nc.registration_len;
		nc.registration = NULL;
		vm->clo_paths = vm_keep(vm, nc.paths);
		vm->nclo = nc.npaths;
		for (size_t i = 0; i < nc.npaths; i++)
			vm_keep(vm, nc.paths[i]);
		nc.paths = NULL;
		nc.npaths = 0;
	}
	if (!vm->clo_paths || !vm->registration)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < vm->nclo; i++)
		found |= !strcmp(vm->clo_paths[i], vm->sys_path);
	if (!found)
		return img_set_error(ctx, -EINVAL, "--closure-info %s: does not hold --system %s",
		                     o->closure_info, vm->sys_path);
	/* The closure's identity: its sorted paths (store paths never change)
	 * and what else makes the store image's bytes. */
	{
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		uint8_t d[32];
		char hex[65];

		if (!f)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		fprintf(f, "vmlaunch-store-image-v1\nstore=%s\n", vm->store_dir);
		for (size_t i = 0; i < vm->nclo; i++)
			fprintf(f, "%s\n", vm->clo_paths[i]);
		if (fclose(f)) {
			free(buf);
			return img_set_error(ctx, -ENOMEM, "out of memory");
		}
		img_sha256(buf, len, d);
		free(buf);
		img_hex(d, 16, hex);
		vm->closure_id = vm_strdup(vm, hex);
	}
	return 0;
}

int vm_resolve_system(struct img_ctx *ctx, struct img_vm *vm)
{
	struct img_vm_opts *o = &vm->o;
	const char *const need[] = { "kernel", "initrd", "init", "kernel-params" };
	char *params = NULL, *consoles;
	int r;

	if (o->image)
		return img_set_error(
		    ctx, -EINVAL,
		    "--system and IMAGE together: --system boots TOPLEVEL directly "
		    "on an empty root disk of its own");
	if (o->initrd || o->append)
		return img_set_error(ctx, -EINVAL,
		                     "--system takes initrd and parameters from TOPLEVEL; "
		                     "--initrd/--append are for IMAGE (--kernel replaces "
		                     "TOPLEVEL/kernel, as NIXPKGS_QEMU_KERNEL_<name> does)");
	if (o->boot != IMG_VM_BOOT_AUTO && o->boot != IMG_VM_BOOT_DIRECT)
		return img_set_error(ctx, -EINVAL,
		                     "--system boots directly, as the reference's default "
		                     "(no boot loader); use an mkvmimage --efi/--bios IMAGE for "
		                     "--boot efi|bios");
	vm->root = vm_strdup(vm, o->root && strcmp(o->root, "/") ? o->root : "");
	if (vm->root && *vm->root) {
		char *abs = vm_readlink_f(vm, vm->root);

		if (!abs)
			return img_set_error(ctx, -errno, "--root %s: %s", o->root,
			                     strerror(errno));
		vm->root = strcmp(abs, "/") ? abs : vm_strdup(vm, "");
	}
	vm->store_dir = vm_strdup(vm, o->store_dir ? o->store_dir : "/nix/store");
	if (!vm->root || !vm->store_dir)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (vm->store_dir[0] != '/')
		return img_set_error(ctx, -EINVAL, "--store-dir %s: must be absolute",
		                     vm->store_dir);
	vm->nix_db = o->nix_db ? vm_strdup(vm, o->nix_db)
	                       : vm_printf(vm, "%s/nix/var/nix/db/db.sqlite", vm->root);
	vm->store_host = vm_printf(vm, "%s%s", vm->root, vm->store_dir);
	if ((r = resolve_toplevel(ctx, vm)) < 0)
		return r;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(need); i++) {
		char *p = vm_printf(vm, "%s/%s", vm->sys_host, need[i]);

		if (!p)
			return img_set_error(ctx, -ENOMEM, "out of memory");
		if (access(p, R_OK) < 0)
			return img_set_error(ctx, -errno,
			                     "--system %s: %s: %s (not a NixOS system toplevel?)",
			                     o->system, p, strerror(errno));
	}
	if ((r = load_closure(ctx, vm)) < 0)
		return r;
	if (!o->name)
		o->name = system_name(vm);

	vm->boot = IMG_VM_BOOT_DIRECT;
	vm->boot_source = "--system option";
	if ((r = system_kernel(ctx, vm)) < 0)
		return r;
	vm->initrd = vm_printf(vm, "%s/initrd", vm->sys_host);
	if ((r = read_small(ctx, vm_printf(vm, "%s/kernel-params", vm->sys_host), &params)) < 0)
		return r;
	vm_keep(vm, params);
	/* qemu.consoles: the last is the preferred one; serial last when
	 * headless (the reference reverses its default list then). */
	if (o->nconsoles) {
		consoles = vm_strdup(vm, "");
		for (size_t i = 0; consoles && i < o->nconsoles; i++)
			consoles =
			    vm_printf(vm, "%s%sconsole=%s", consoles, i ? " " : "", o->consoles[i]);
	} else {
		consoles = vm_strdup(vm, o->graphics ? "console=ttyS0,115200n8 console=tty0"
		                                     : "console=tty0 console=ttyS0,115200n8");
	}
	vm->append =
	    vm_printf(vm, "%s init=%s/init regInfo=%s %s %s", params, vm->sys_path, VM_REG_GUEST,
	              consoles ? consoles : "", o->kernel_params ? o->kernel_params : "");
	if (!vm->kernel || !vm->initrd || !vm->append)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	return 0;
}

/* Paths in the state directory (again after an ephemeral one is made). */
int vm_system_paths(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;

	vm->reg_host = vm_printf(vm, "%s/" VM_REG_NAME, vm->xchg_dir);
	/* vm_compute_paths() resolved it (NIX_DISK_IMAGE, readlink -f). */
	vm->root_disk = vm->overlay;
	vm->root_disk_format = "qcow2"; /* an existing one: vm_compute_paths() reads it */
	if (o->store_image_auto)
		vm->store_cache = vm_printf(vm, "%s/store-%s.img", vm->state_dir, vm->closure_id);
	if (!vm->reg_host || (o->store_image_auto && !vm->store_cache))
		return img_set_error(ctx, -ENOMEM, "out of memory");
	return 0;
}

/*
 * Everything below goes through the directories img_vm_prepare() holds
 * (vm-dir.c): files are created O_EXCL under a temporary name and renamed
 * into place; only regular files of ours are replaced or removed.
 */

/* A new file @name of @d with @data, replacing an old regular file of ours. */
static int write_file(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                      const char *name, const char *data, size_t len, mode_t mode)
{
	char *tmp = vm_printf(vm, ".%s.tmp", name);
	int fd, r;

	if (!tmp)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if ((r = vm_dir_remove(ctx, vm, d, tmp, S_IFREG)) < 0 ||
	    (r = vm_dir_create(ctx, vm, d, tmp, mode, &fd)) < 0)
		return r;
	r = img_pwrite_full(fd, data, len, 0);
	if (r >= 0 && (r = vm_dir_remove(ctx, vm, d, name, S_IFREG)) == 0 &&
	    renameat(d->fd, tmp, d->fd, name) < 0)
		r = -errno;
	if (r < 0) {
		vm_dir_unlink_fd(d, tmp, fd);
		close(fd);
		return img_ctx_error(ctx)[0]
		           ? r
		           : img_set_error(ctx, r, "%s: %s", vm_dir_name(vm, d, name),
		                           strerror(-r));
	}
	close(fd);
	return 0;
}

/* Build @bo (a recipe) into the new file @name of @d: a temporary name,
 * made O_EXCL and written through /proc/self/fd, renamed when whole. */
static int build_into(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                      const char *name, struct img_build_opts *bo, const char *what)
{
	char *tmp = vm_printf(vm, ".%s.tmp", name), *proc;
	int fd, r;

	if (!tmp)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if ((r = vm_dir_remove(ctx, vm, d, tmp, S_IFREG)) < 0 ||
	    (r = vm_dir_create(ctx, vm, d, tmp, 0600, &fd)) < 0)
		return r;
	proc = vm_printf(vm, "/proc/self/fd/%d", fd);
	bo->output = proc;
	bo->output_name = vm_dir_name(vm, d, name);
	r = proc ? img_build(ctx, bo) : img_set_error(ctx, -ENOMEM, "out of memory");
	if (r >= 0 && renameat(d->fd, tmp, d->fd, name) < 0)
		r = img_set_error(ctx, -errno, "%s: %s", vm_dir_name(vm, d, name), strerror(errno));
	if (r < 0) {
		vm_dir_unlink_fd(d, tmp, fd);
		img_error_prefix(ctx, r, "%s %s", what, vm_dir_name(vm, d, name));
	}
	close(fd);
	return r;
}

/* Store images of other closures this VM made earlier: stale now. */
static void drop_stale_store_images(struct img_ctx *ctx, struct img_vm *vm, const char *keep)
{
	int fd = openat(vm->state.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *e;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (n == 6 + 32 + 4 && !strncmp(e->d_name, "store-", 6) &&
		    !strcmp(e->d_name + n - 4, ".img") &&
		    strspn(e->d_name + 6, "0123456789abcdef") == 32 && strcmp(e->d_name, keep) &&
		    vm_dir_remove(ctx, vm, &vm->state, e->d_name, S_IFREG) < 0)
			img_ctx_clear_error(ctx); /* not ours: left alone */
	}
	closedir(d);
}

/* The record beside a root disk vmlaunch made (what --fresh looks for). */
static char *disk_record(struct img_vm *vm, const struct vm_dir *d, const char *name)
{
	struct stat st;

	if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return NULL;
	return vm_printf(
	    vm, "image=%s\ndev=%llu\nino=%llu\nsize=%lld\nmtime=%lld.%09ld\nsystem=%s\n",
	    vm->root_disk, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
	    (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, vm->sys_path);
}

int vm_prepare_system(struct img_ctx *ctx, struct img_vm *vm, int dry)
{
	const struct img_vm_opts *o = &vm->o;
	struct vm_dir xchg, clo;
	struct stat st;
	int r;

	if (vm->state.fd < 0)
		return 0; /* --dry-run before the state exists: nothing to check */
	/* The registration where the guest reads it (regInfo=). */
	if (o->xchg_dir) {
		xchg = vm->xchg;
		xchg.fd = vm->xchg.fd >= 0 ? dup(vm->xchg.fd) : -1;
	} else if (!dry) {
		if ((r = vm_dir_subdir(ctx, &vm->state, "xchg", 0700, vm->xchg_dir, &xchg)) < 0)
			return r;
	} else {
		vm_dir_init(&xchg);
	}
	r = 0;
	if (xchg.fd >= 0) {
		if (dry) {
			r = vm_dir_lstat(ctx, vm, &xchg, VM_REG_NAME, &st);
			r = r <= 0 ? r : vm_check_mine(ctx, vm->reg_host, &st, S_IFREG, "replace");
		} else {
			/* 0644: every guest user reads it (model none shows host modes) */
			r = write_file(ctx, vm, &xchg, VM_REG_NAME, vm->registration, vm->reg_len,
			               0644);
		}
	}
	vm_dir_close(&xchg);
	if (r < 0)
		return r;

	/* The root disk: made empty (ext4 nixos) on first start, then kept. */
	if (vm->root_disk && vm->disk_dir->fd >= 0) {
		r = vm_dir_lstat(ctx, vm, vm->disk_dir, vm->overlay_name, &st);
		if (r < 0)
			return r;
		if (r > 0) {
			int fd;

			if ((r = vm_check_mine(ctx, vm->root_disk, &st, S_IFREG, "boot")) < 0 ||
			    (r = vm_dir_open_file(ctx, vm, vm->disk_dir, vm->overlay_name, O_RDONLY,
			                          &fd)) < 0)
				return r;
			close(fd);
		} else if (!dry) {
			struct img_build_opts bo = { .mode = IMG_MODE_EMPTY,
				                     .format = IMG_FORMAT_QCOW2,
				                     .size = o->disk_size ? o->disk_size
				                                          : 1024ull << 20,
				                     .label = "nixos" };
			char *rec;

			if ((r = build_into(ctx, vm, vm->disk_dir, vm->overlay_name, &bo,
			                    "root disk")) < 0)
				return r;
			vm->root_disk_created = 1;
			vm->root_disk_format = "qcow2";
			rec = disk_record(vm, vm->disk_dir, vm->overlay_name);
			if (!rec || (r = write_file(ctx, vm, vm->disk_dir, vm->overlay_id_name, rec,
			                            strlen(rec), 0600)) < 0)
				return rec ? r : img_set_error(ctx, -ENOMEM, "out of memory");
		}
	}

	/* The store image: built once per closure, then a cache hit. */
	if (vm->store_cache) {
		const char *name = strrchr(vm->store_cache, '/') + 1;

		r = vm_dir_lstat(ctx, vm, &vm->state, name, &st);
		if (r < 0)
			return r;
		if (r > 0) {
			if ((r = vm_check_mine(ctx, vm->store_cache, &st, S_IFREG, "attach")) < 0)
				return r;
			vm->store_cached = 1;
		} else if (!dry) {
			struct img_build_opts bo = { .mode = IMG_MODE_STORE,
				                     .format = IMG_FORMAT_RAW,
				                     .root = *vm->root ? vm->root : "/",
				                     .store_dir = vm->store_dir,
				                     .label = "nix-store",
				                     .uuid = VM_STORE_UUID };
			char *paths = NULL;
			size_t len = 0;
			FILE *f;

			/* The closure as a closureInfo directory for the recipe. */
			if ((r = vm_dir_subdir(ctx, &vm->state, "closure", 0700,
			                       vm_printf(vm, "%s/closure", vm->state_dir), &clo)) <
			    0)
				return r;
			if (!(f = open_memstream(&paths, &len))) {
				vm_dir_close(&clo);
				return img_set_error(ctx, -ENOMEM, "out of memory");
			}
			for (size_t i = 0; i < vm->nclo; i++)
				fprintf(f, "%s\n", vm->clo_paths[i]);
			if (fclose(f) || !vm_keep(vm, paths)) {
				vm_dir_close(&clo);
				return img_set_error(ctx, -ENOMEM, "out of memory");
			}
			r = write_file(ctx, vm, &clo, "store-paths", paths, len, 0600);
			if (r >= 0)
				r = write_file(ctx, vm, &clo, "registration", vm->registration,
				               vm->reg_len, 0600);
			vm_dir_close(&clo);
			if (r < 0)
				return r;
			bo.closure = vm_printf(vm, "%s/closure", vm->state_dir);
			if ((r = build_into(ctx, vm, &vm->state, name, &bo, "store image")) < 0)
				return r;
			drop_stale_store_images(ctx, vm, name);
		}
	}
	return 0;
}
