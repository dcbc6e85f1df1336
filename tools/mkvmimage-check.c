/*
 * mkvmimage-check.c -- the checks between mkvmimage's options once they
 * are read: what a mode takes, the output format from the name, and that
 * the output and the manifest are never one of the inputs, nor each other
 * (refused before anything is created).
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <img/image.h>

#include "mkvmimage-args.h"

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && !strcmp(s + a - b, suffix);
}

/*
 * Is @out (the output or the manifest, looked at without following a final
 * symlink: the rename replaces that name, not what it points to) the same
 * file as the input @in (followed: it is read through its links)?
 */
static int is_input(const char *out, const char *in)
{
	struct stat so, si;

	return lstat(out, &so) == 0 && stat(in, &si) == 0 && so.st_dev == si.st_dev &&
	       so.st_ino == si.st_ino;
}

/* Do two output names name one file, whether or not it exists yet? */
static int same_name(const char *x, const char *y)
{
	struct stat sx, sy;
	char *a, *b, *da, *db;
	int ex = lstat(x, &sx) == 0, ey = lstat(y, &sy) == 0, same;

	if (ex || ey)
		return ex && ey && sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
	a = strdup(x);
	b = strdup(y);
	da = strdup(x);
	db = strdup(y);
	if (!a || !b || !da || !db)
		abort();
	same = !strcmp(basename(a), basename(b)) && stat(dirname(da), &sx) == 0 &&
	       stat(dirname(db), &sy) == 0 && sx.st_dev == sy.st_dev && sx.st_ino == sy.st_ino;
	free(a);
	free(b);
	free(da);
	free(db);
	return same;
}

/*
 * The output and the manifest are written to temporaries and renamed over
 * their names: a name that is one of the inputs would lose that input (and
 * a manifest named like the image would replace the image). Refuse before
 * anything is created. Returns 0, or 2 (message printed).
 */
int mkvmimage_check_outputs(const struct img_build_opts *o, const char *manifest)
{
	struct {
		const char *what, *path;
	} in[8];
	size_t n = 0;
	char *sp = NULL, *reg = NULL, *bimg = NULL, *cimg = NULL;
	struct stat st;
	int r = 0;

	if (o->closure && strcmp(o->closure, "-")) {
		in[n++] = (typeof(in[0])){ "the closure", o->closure };
		if (stat(o->closure, &st) == 0 && S_ISDIR(st.st_mode)) {
			if (asprintf(&sp, "%s/store-paths", o->closure) < 0 ||
			    asprintf(&reg, "%s/registration", o->closure) < 0)
				abort();
			in[n++] = (typeof(in[0])){ "the closure's store-paths", sp };
			in[n++] = (typeof(in[0])){ "the closure's registration", reg };
		}
	}
	if (o->tar && strcmp(o->tar, "-"))
		in[n++] = (typeof(in[0])){ "the --tar input", o->tar };
	if (o->bootloader)
		in[n++] = (typeof(in[0])){ "the --bootloader file", o->bootloader };
	if (o->uki_stub)
		in[n++] = (typeof(in[0])){ "the --uki-stub file", o->uki_stub };
	if (o->grub_dir) {
		if (asprintf(&bimg, "%s/boot.img", o->grub_dir) < 0 ||
		    asprintf(&cimg, "%s/core.img", o->grub_dir) < 0)
			abort();
		in[n++] = (typeof(in[0])){ "--grub's boot.img", bimg };
		in[n++] = (typeof(in[0])){ "--grub's core.img", cimg };
	}
	for (size_t i = 0; i < n && !r; i++) {
		if (is_input(o->output, in[i].path))
			r = usage_error("-o %s is %s (%s): it would be replaced; choose another "
			                "output name",
			                o->output, in[i].what, in[i].path);
		else if (manifest && is_input(manifest, in[i].path))
			r = usage_error("--manifest %s is %s (%s): it would be replaced; choose "
			                "another manifest name",
			                manifest, in[i].what, in[i].path);
	}
	if (!r && manifest && same_name(manifest, o->output))
		r = usage_error("--manifest %s is the output image %s: the manifest would replace "
		                "it; choose another name",
		                manifest, o->output);
	free(sp);
	free(reg);
	free(bimg);
	free(cimg);
	return r;
}

int mkvmimage_check_args(struct mk_cli *c)
{
	if (!c->o.output)
		return usage_error("%s", "no output file: give -o FILE");
	if (c->o.specialisation && c->o.mode != IMG_MODE_EFI && c->o.mode != IMG_MODE_BIOS &&
	    c->o.mode != IMG_MODE_HYBRID)
		return usage_error("%s", "--specialisation needs --efi, --bios or --hybrid");
	if (c->o.mode == IMG_MODE_EMPTY) {
		if (c->o.closure || c->o.tar)
			return usage_error("%s", "--empty takes no closure");
		if (!c->o.size)
			return usage_error("%s", "--empty needs --size");
	} else if (!c->o.closure && !c->o.tar) {
		return usage_error("%s", "no closure given (a store-paths file, a closureInfo "
		                         "directory, - for stdin, or --tar)");
	}
	if (c->o.closure && c->o.tar && !strcmp(c->o.closure, "-") && !strcmp(c->o.tar, "-"))
		return usage_error("%s", "the closure and --tar cannot both be stdin");
	if (!c->format_given)
		c->o.format = ends_with(c->o.output, ".qcow2") ? IMG_FORMAT_QCOW2
		              : ends_with(c->o.output, ".vhd") || ends_with(c->o.output, ".vpc")
		                  ? IMG_FORMAT_VPC
		              : ends_with(c->o.output, ".vdi")  ? IMG_FORMAT_VDI
		              : ends_with(c->o.output, ".vmdk") ? IMG_FORMAT_VMDK
		                                                : IMG_FORMAT_RAW;
	if (c->vpc_sub && c->o.format != IMG_FORMAT_VPC)
		return usage_error("%s", "--vpc-subformat needs VHD output (--format vpc or a .vhd "
		                         "name)");
	if (c->vmdk_sub && c->o.format != IMG_FORMAT_VMDK)
		return usage_error("%s", "--vmdk-subformat needs VMDK output (--format vmdk or a "
		                         ".vmdk name)");
	c->o.vdisk = c->o.format == IMG_FORMAT_VPC ? c->vpc_sub : c->vmdk_sub;
	if (c->o.compression && c->o.format != IMG_FORMAT_QCOW2)
		return usage_error("%s", "--compress needs qcow2 output (--format qcow2 or a "
		                         ".qcow2 name)");
	if (c->o.uki_stub)
		c->o.uki = 1;
	if (c->o.verity && c->o.mode != IMG_MODE_STORE && c->o.mode != IMG_MODE_EFI)
		return usage_error("%s", "--verity needs --store-image or --efi");
	if (c->o.fs_compression && c->o.mode != IMG_MODE_STORE)
		return usage_error("%s", "--compress-fs needs --store-image");
	if (c->o.fs_compression && c->o.format != IMG_FORMAT_RAW)
		return usage_error("%s", "--compress-fs writes raw output, not qcow2");
	if (!c->no_manifest && !c->manifest) {
		if (asprintf(&c->default_manifest, "%s.json", c->o.output) < 0)
			abort();
		c->manifest = c->default_manifest;
	}
	int r = mkvmimage_check_outputs(&c->o, c->no_manifest ? NULL : c->manifest);
	if (r) {
		free(c->default_manifest);
		return r;
	}
	return 0;
}
