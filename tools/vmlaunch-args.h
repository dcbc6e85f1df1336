/*
 * vmlaunch-args.h -- what vmlaunch's command line and environment set
 * (struct cli), and the parser that fills it from the option table.
 */
#ifndef VMLAUNCH_ARGS_H
#define VMLAUNCH_ARGS_H

#include <stdint.h>
#include <img/vm.h>

#define MAXN 64

struct list {
	const char *v[MAXN];
	size_t n;
};

/* Everything the command line and the environment set. */
struct cli {
	struct img_vm_opts o;
	struct list shares, fwds, gfwds, fwdirs, qopts, consoles, drives;
	uint64_t empty[MAXN];
	size_t nempty;
	unsigned vlans[MAXN];
	size_t nvlans;
	int print, dry, quiet, verbose, graphics, certs, help, version;
	const char *store;
	uint64_t disk_size;
	char *state_home, *config_home, *qemu_opts_env, *relay_str, *xchg;
};

/* Options and operands into @c: 0 to go on, -1 after --help/--version
 * (exit 0), else the exit status (2: usage, message printed). */
int vmlaunch_parse_args(struct cli *c, int argc, char **argv);
/* Append @s to @l; -1 (message printed) when full. */
int vmlaunch_list_add(struct list *l, const char *opt, const char *s);

#endif
