/*
 * vm-spec.c -- the options' specs, parsed into the VM description: port
 * forwards (--forward, --guest-forward), 9p shares (--share and the
 * reference's own), VLAN numbers.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include "vm-private.h"

static int parse_port(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!*s || *s < '0' || *s > '9')
		return -1;
	v = strtoul(s, &end, 10);
	if (*end || v == 0 || v > 65535)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static int is_ipv4(const char *s)
{
	struct in_addr a;

	return inet_pton(AF_INET, s, &a) == 1;
}

/* "[tcp|udp:][HOSTADDR:]HOSTPORT:GUESTPORT" */
static int parse_forward(struct img_ctx *ctx, const char *spec, struct vm_forward *f)
{
	char buf[256], *parts[4];
	size_t n = 0;
	char *p = buf;

	if (strlen(spec) >= sizeof(buf))
		goto bad;
	strcpy(buf, spec);
	memset(f, 0, sizeof(*f));
	while (n < 4) {
		parts[n++] = p;
		p = strchr(p, ':');
		if (!p)
			break;
		*p++ = '\0';
	}
	if (p)
		goto bad;
	{
		size_t i = 0;

		if (n >= 3 && (!strcmp(parts[0], "tcp") || !strcmp(parts[0], "udp"))) {
			f->udp = !strcmp(parts[0], "udp");
			i = 1;
		}
		if (n - i == 3) {
			if (!is_ipv4(parts[i]))
				return img_set_error(ctx, -EINVAL,
				                     "--forward %s: '%s' is not an IPv4 address "
				                     "(SLiRP forwards IPv4 only)",
				                     spec, parts[i]);
			snprintf(f->host_addr, sizeof(f->host_addr), "%s", parts[i]);
			i++;
		} else if (n - i == 2) {
			strcpy(f->host_addr, "127.0.0.1");
		} else {
			goto bad;
		}
		if (parse_port(parts[i], &f->host_port) || parse_port(parts[i + 1], &f->guest_port))
			goto bad;
	}
	return 0;
bad:
	return img_set_error(
	    ctx, -EINVAL, "--forward %s: expected [tcp|udp:][HOSTADDR:]HOSTPORT:GUESTPORT", spec);
}

/* "GUESTADDR:GUESTPORT:HOSTADDR:HOSTPORT" */
static int parse_guest_forward(struct img_ctx *ctx, const char *spec, struct vm_guest_forward *g)
{
	char buf[128], *a, *b, *c, *d;

	if (strlen(spec) >= sizeof(buf))
		goto bad;
	strcpy(buf, spec);
	a = buf;
	if (!(b = strchr(a, ':')))
		goto bad;
	*b++ = '\0';
	if (!(c = strchr(b, ':')))
		goto bad;
	*c++ = '\0';
	if (!(d = strchr(c, ':')))
		goto bad;
	*d++ = '\0';
	if (!is_ipv4(a) || !is_ipv4(c) || parse_port(b, &g->guest_port) ||
	    parse_port(d, &g->host_port))
		goto bad;
	/* As the reference asserts: the guest address is on SLiRP's network. */
	if (strncmp(a, "10.0.2.", 7))
		return img_set_error(ctx, -EINVAL,
		                     "--guest-forward %s: the guest address must be in 10.0.2.0/24 "
		                     "(the user network)",
		                     spec);
	snprintf(g->guest_addr, sizeof(g->guest_addr), "%s", a);
	snprintf(g->host_addr, sizeof(g->host_addr), "%s", c);
	return 0;
bad:
	return img_set_error(ctx, -EINVAL,
	                     "--guest-forward %s: expected GUESTADDR:GUESTPORT:HOSTADDR:HOSTPORT "
	                     "(IPv4 addresses, TCP)",
	                     spec);
}

static int valid_tag(const char *t)
{
	if (!*t || strlen(t) > 31)
		return 0;
	for (; *t; t++)
		if (!((*t >= 'a' && *t <= 'z') || (*t >= 'A' && *t <= 'Z') ||
		      (*t >= '0' && *t <= '9') || *t == '-' || *t == '_' || *t == '.'))
			return 0;
	return 1;
}

/* The tags the reference's guest configuration mounts; vmlaunch provides
 * them itself (xchg, shared, certs; nix-store in --system mode). */
static const char *const reserved_tags[] = { "xchg", "shared", "certs", "nix-store" };

/* "TAG:SOURCE:TARGET[:MODEL]" */
static int parse_share(struct img_ctx *ctx, struct img_vm *vm, const char *spec, struct vm_share *s)
{
	char *buf = vm_strdup(vm, spec), *src, *tgt, *model;

	if (!buf)
		return -ENOMEM;
	if (!(src = strchr(buf, ':')) || !(tgt = strchr(src + 1, ':')))
		return img_set_error(ctx, -EINVAL, "--share %s: expected TAG:SOURCE:TARGET[:MODEL]",
		                     spec);
	*src++ = '\0';
	*tgt++ = '\0';
	model = strchr(tgt, ':');
	if (model)
		*model++ = '\0';
	else
		model = "mapped-xattr"; /* the reference's default securityModel */
	if (!valid_tag(buf))
		return img_set_error(ctx, -EINVAL,
		                     "--share %s: tag '%s' must be 1-31 letters, digits, '-', '_' "
		                     "or '.'",
		                     spec, buf);
	for (size_t i = 0; i < IMG_ARRAY_SIZE(reserved_tags); i++)
		if (!strcmp(buf, reserved_tags[i]))
			return img_set_error(
			    ctx, -EINVAL,
			    "--share %s: tag '%s' is vmlaunch's own (xchg, shared, "
			    "certs and nix-store are the reference's shares; use "
			    "SHARED_DIR for shared, --host-certs for certs)",
			    spec, buf);
	if (!*src || !*tgt || tgt[0] != '/')
		return img_set_error(ctx, -EINVAL,
		                     "--share %s: SOURCE must be given and TARGET absolute", spec);
	if (strcmp(model, "passthrough") && strcmp(model, "mapped-xattr") &&
	    strcmp(model, "mapped-file") && strcmp(model, "none"))
		return img_set_error(ctx, -EINVAL,
		                     "--share %s: model '%s' is not one of passthrough, "
		                     "mapped-xattr, mapped-file, none",
		                     spec, model);
	s->tag = buf;
	s->source = src;
	s->target = tgt;
	s->model = model;
	return 0;
}

/* @src NULL: a directory of the state, set once its path is known. */
int vm_add_share(struct img_ctx *ctx, struct img_vm *vm, const char *tag, const char *src,
                 const char *tgt, const char *model)
{
	struct vm_share *s = &vm->shares[vm->nshares];

	for (size_t i = 0; i < vm->nshares; i++)
		if (!strcmp(vm->shares[i].tag, tag))
			return img_set_error(ctx, -EINVAL, "9p tag '%s' is used twice", tag);
	s->tag = vm_strdup(vm, tag);
	s->source = src ? vm_strdup(vm, src) : NULL;
	s->target = vm_strdup(vm, tgt);
	s->model = vm_strdup(vm, model);
	s->ours = !src;
	vm->nshares++;
	return 0;
}

int vm_parse_specs(struct img_ctx *ctx, struct img_vm *vm)
{
	const struct img_vm_opts *o = &vm->o;
	int r;

	vm->fwd = vm_keep(vm, img_malloc0(sizeof(*vm->fwd) * (o->nforwards + 1)));
	vm->gfwd = vm_keep(vm, img_malloc0(sizeof(*vm->gfwd) * (o->nguest_forwards + 1)));
	vm->shares = vm_keep(vm, img_malloc0(sizeof(*vm->shares) * (o->nshares + 5)));
	if (!vm->fwd || !vm->gfwd || !vm->shares)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < o->nforwards; i++) {
		if ((r = parse_forward(ctx, o->forwards[i], &vm->fwd[i])) < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (vm->fwd[j].host_port == vm->fwd[i].host_port &&
			    vm->fwd[j].udp == vm->fwd[i].udp)
				return img_set_error(
				    ctx, -EINVAL, "--forward %s: host port %u is forwarded twice",
				    o->forwards[i], vm->fwd[i].host_port);
		vm->nfwd++;
	}
	if (o->relay_cmd) {
		const char *c = o->relay_cmd;

		if (!*c || c[0] == ' ' || strstr(c, "  ") || c[strlen(c) - 1] == ' ' ||
		    c[strspn(
		        c, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+- ")])
			return img_set_error(
			    ctx, -EINVAL,
			    "relay command '%s': only letters, digits, '/._+-' and "
			    "single spaces",
			    c);
	}
	for (size_t i = 0; i < o->nguest_forwards; i++) {
		if ((r = parse_guest_forward(ctx, o->guest_forwards[i], &vm->gfwd[i])) < 0)
			return r;
		vm->ngfwd++;
	}
	for (size_t i = 0; i < o->nshares; i++) {
		struct vm_share s = { 0 };

		if ((r = parse_share(ctx, vm, o->shares[i], &s)) < 0)
			return r;
		if ((r = vm_add_share(ctx, vm, s.tag, s.source, s.target, s.model)) < 0)
			return r;
	}
	/* The reference's own shares, always: xchg (a directory of the state),
	 * shared ($SHARED_DIR, else xchg), certs (a copy of the host bundle). */
	if ((r = vm_add_share(ctx, vm, "xchg", NULL, "/tmp/xchg", "none")) < 0 ||
	    (r = vm_add_share(ctx, vm, "shared", o->shared_dir, "/tmp/shared", "none")) < 0)
		return r;
	if (o->host_certs &&
	    (r = vm_add_share(ctx, vm, "certs", NULL, "/etc/ssl/certs", "none")) < 0)
		return r;
	for (size_t i = 0; i < o->nvlans; i++) {
		if (o->vlans[i] < 1 || o->vlans[i] > 255)
			return img_set_error(ctx, -EINVAL, "--vlan %u: must be 1 to 255",
			                     o->vlans[i]);
		for (size_t j = 0; j < i; j++)
			if (o->vlans[j] == o->vlans[i])
				return img_set_error(ctx, -EINVAL, "--vlan %u given twice",
				                     o->vlans[i]);
	}
	return 0;
}

/* The state's shares get their paths in vm_compute_paths() (vm-state.c). */
