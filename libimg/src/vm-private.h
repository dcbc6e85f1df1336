/*
 * vm-private.h -- what the vm*.c files share: the resolved VM description.
 */
#ifndef IMG_VM_PRIVATE_H
#define IMG_VM_PRIVATE_H

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

struct img_vm {
	struct img_vm_opts o; /* strings and arrays point into the pool below */
	void **pool;          /* every allocation the VM owns */
	size_t npool, cpool;

	/* the image */
	char *image;        /* absolute */
	char *image_format; /* "qcow2" | "raw" */
	uint64_t image_size;
	char *store_format;
	char *manifest_system, *manifest_params;

	/* decisions */
	enum img_vm_boot boot;
	const char *boot_source;
	enum img_vm_accel accel;
	char *accel_reason;
	struct img_vm_firmware fw;
	int have_fw;
	char *kernel, *initrd, *append;

	/* parsed specs */
	struct vm_forward *fwd;
	size_t nfwd;
	struct vm_guest_forward *gfwd;
	size_t ngfwd;
	struct vm_share *shares;
	size_t nshares;
	unsigned vlan_index;

	/* state */
	char *state_dir;
	int state_is_template; /* ephemeral, not made yet: ends in XXXXXX */
	int state_created;     /* made by prepare: removed by free if ephemeral */
	char *overlay, *overlay_id, *efi_vars, *swtpm_dir, *swtpm_sock, *swtpm_log;
	char *console_log, *qmp_sock, *qga_sock, *certs_dir, *xchg_dir;
	char **empty_paths;

	/* argv */
	char **argv;
	size_t argc;
};

/* The fd the control QMP connection has inside QEMU (socketpair end). */
#define VM_CTL_FD 3

/* Pool helpers: the VM frees these at img_vm_free(). */
void *vm_keep(struct img_vm *vm, void *p);
char *vm_strdup(struct img_vm *vm, const char *s);
char *vm_printf(struct img_vm *vm, const char *fmt, ...) IMG_PRINTF(2, 3);

/* vm.c */
int vm_build_argv(struct img_ctx *ctx, struct img_vm *vm);
int vm_parse_specs(struct img_ctx *ctx, struct img_vm *vm);

/* vm-state.c */
int vm_resolve(struct img_ctx *ctx, struct img_vm *vm);
int vm_compute_paths(struct img_ctx *ctx, struct img_vm *vm);
int vm_probe_accel(struct img_ctx *ctx, struct img_vm *vm);
int vm_check_ports(struct img_ctx *ctx, const struct img_vm *vm);
void vm_rmrf(const char *path);

#endif
