/*
 * vm-private.h -- what the vm*.c files share: the resolved VM description.
 */
#ifndef IMG_VM_PRIVATE_H
#define IMG_VM_PRIVATE_H

#include <sys/stat.h>
#include <sys/types.h>

#include "private.h"
#include <img/vm.h>

#define VM_MAX_ARGS 512

struct vm_forward {
	int udp;
	char host_addr[64];
	unsigned host_port, guest_port;
};

struct vm_guest_forward {
	char guest_addr[16];
	unsigned guest_port;
	char host_addr[16];
	unsigned host_port;
};

struct vm_share {
	char *tag, *source, *target, *model;
	int ours; /* a directory of the state (xchg, certs): made by prepare */
};

/* A directory of the state, held open; names in it are reached relative to
 * fd and never through a symbolic link (vm-dir.c). */
struct vm_dir {
	int fd;           /* -1: not open (absent, or not needed) */
	const char *path; /* for messages */
};

enum vm_dir_kind {
	VM_DIR_OWN,    /* state dir, TPM dir: the caller's, writable by nobody else */
	VM_DIR_HOLDER, /* the directory of a NIX_* file: may be shared if sticky */
};

struct img_vm {
	struct img_vm_opts o; /* strings and arrays point into the pool below */
	void **pool;          /* every allocation the VM owns */
	size_t npool, cpool;

	/* the image */
	char *image;        /* absolute */
	char *image_format; /* "qcow2" | "raw" */
	uint64_t image_size;
	char *store_format;
	char *manifest_system, *manifest_params, *manifest_path;

	/* decisions */
	enum img_vm_boot boot;
	const char *boot_source;
	enum img_vm_accel accel;
	char *accel_reason;
	struct img_vm_firmware fw;
	int have_fw;
	char *kernel, *initrd, *append;
	const char *kernel_source; /* --system: what replaced TOPLEVEL/kernel, or NULL */
	char *kernel_var;          /* --system: NIXPKGS_QEMU_KERNEL_<system.name> */

	/* parsed specs */
	struct vm_forward *fwd;
	size_t nfwd;
	struct vm_guest_forward *gfwd;
	size_t ngfwd;
	struct vm_share *shares;
	size_t nshares;
	unsigned vlan_index;

	/* --system (vm-system.c) */
	char *root, *store_dir, *store_host, *nix_db; /* root "" for "/" */
	char *sys_path, *sys_host;                    /* logical and host toplevel */
	char **clo_paths;                             /* its closure, sorted */
	size_t nclo;
	char *registration, *closure_id, *reg_host;
	size_t reg_len;
	char *root_disk, *root_disk_format, *store_cache;
	int root_disk_created, store_cached;

	/* --drive FILE[,OPTS], split */
	char **drive_files, **drive_formats, **drive_opts;

	/* state */
	char *state_dir;
	int state_is_template; /* ephemeral, not made yet: ends in XXXXXX */
	int state_created;     /* made by prepare: removed by free if ephemeral */
	char *overlay, *overlay_id, *efi_vars, *swtpm_dir, *swtpm_sock, *swtpm_log;
	char *console_log, *qmp_sock, *qga_sock, *certs_dir, *xchg_dir;
	char **empty_paths;
	/* Held from img_vm_prepare() to img_vm_free(): the directories (disk_dir,
	 * vars_dir and tpm_dir point at state unless a NIX_* variable moved the
	 * file), the lock on the state dir, the --serial-log file. */
	struct vm_dir tmp, state, disk, vars, tpm, *disk_dir, *vars_dir, *tpm_dir;
	struct vm_dir xchg; /* only with USE_TMPDIR (o.xchg_dir); else a subdir of state */
	const char *overlay_name, *overlay_id_name, *vars_name;
	int lock_fd, serial_fd;

	/* argv */
	char **argv;
	size_t argc;
};

/* The fd the control QMP connection has inside QEMU (socketpair end). */
#define VM_CTL_FD 3
/* The state dir's lock, inherited by QEMU and swtpm: held while any runs. */
#define VM_LOCK_FD 4

/* Pool helpers: the VM frees these at img_vm_free(). */
void *vm_keep(struct img_vm *vm, void *p);
char *vm_strdup(struct img_vm *vm, const char *s);
char *vm_printf(struct img_vm *vm, const char *fmt, ...) IMG_PRINTF(2, 3);

/* vm-spec.c */
int vm_parse_specs(struct img_ctx *ctx, struct img_vm *vm);
int vm_add_share(struct img_ctx *ctx, struct img_vm *vm, const char *tag, const char *src,
                 const char *tgt, const char *model);

/* vm-argv.c */
int vm_build_argv(struct img_ctx *ctx, struct img_vm *vm);

/* vm-state.c */
int vm_resolve(struct img_ctx *ctx, struct img_vm *vm);
int vm_compute_paths(struct img_ctx *ctx, struct img_vm *vm);
int vm_probe_accel(struct img_ctx *ctx, struct img_vm *vm);
int vm_check_ports(struct img_ctx *ctx, const struct img_vm *vm);
/* --dry-run: what img_vm_prepare() would refuse, logged as warnings. */
int vm_check_state(struct img_ctx *ctx, struct img_vm *vm);

/* vm-dir.c */
const char *vm_file_kind(mode_t m);
void vm_dir_init(struct vm_dir *d);
void vm_dir_close(struct vm_dir *d);
char *vm_dir_name(struct img_vm *vm, const struct vm_dir *d, const char *name);
/* Open (with @created: make what is missing, 0700) and check a directory. */
int vm_dir_open(struct img_ctx *ctx, const char *path, const char *what, enum vm_dir_kind kind,
                int *created, struct vm_dir *d);
/* The same checks on @path without opening or making it (--dry-run). */
int vm_dir_check(struct img_ctx *ctx, const char *path, const char *what, enum vm_dir_kind kind);
/* A subdirectory of ours in @d, made with @mode if missing. */
int vm_dir_subdir(struct img_ctx *ctx, const struct vm_dir *d, const char *name, mode_t mode,
                  const char *path, struct vm_dir *sub);
/* Take the state dir's lock (-EBUSY naming the holder's pid), or only test it. */
int vm_dir_lock(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, int *fd);
int vm_dir_probe_lock(struct img_ctx *ctx, const struct vm_dir *d);
/* 1 and *@st: @name exists (not followed); 0: absent; <0 error. */
int vm_dir_lstat(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, const char *name,
                 struct stat *st);
/* @st is a @type (S_IFREG, S_IFSOCK) of the caller's, else refuse to @doing it. */
int vm_check_mine(struct img_ctx *ctx, const char *path, const struct stat *st, mode_t type,
                  const char *doing);
/* Open an existing regular file of the caller's (never a link, device, FIFO). */
int vm_dir_open_file(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                     const char *name, int flags, int *fd);
/* Create @name (O_EXCL: nothing may be there), read-write. */
int vm_dir_create(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, const char *name,
                  mode_t mode, int *fd);
/* Remove @name if it still is the file @fd is open on. */
void vm_dir_unlink_fd(const struct vm_dir *d, const char *name, int fd);
/* Remove @name if it is a @type of the caller's; absent is fine; else refuse. */
int vm_dir_remove(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, const char *name,
                  mode_t type);
/* Remove everything in @d, then @d itself if @parent still names it @name. */
void vm_dir_rmrf(struct vm_dir *parent, struct vm_dir *d, const char *name);

/* vm-system.c */
char *vm_readlink_f(struct img_vm *vm, const char *path);
int vm_resolve_system(struct img_ctx *ctx, struct img_vm *vm);
int vm_system_paths(struct img_ctx *ctx, struct img_vm *vm);
int vm_prepare_system(struct img_ctx *ctx, struct img_vm *vm, int dry);

#endif
