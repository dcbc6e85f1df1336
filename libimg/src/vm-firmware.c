/*
 * vm-firmware.c -- pick UEFI firmware from QEMU's firmware descriptors.
 *
 * Implements the lookup QEMU's docs/interop/firmware.json describes:
 * descriptor files in /usr/share/qemu/firmware, /etc/qemu/firmware and
 * $XDG_CONFIG_HOME/qemu/firmware (lowest priority first). A file in a
 * higher-priority directory replaces the same-named one in a lower; an empty
 * file masks it. The merged list is sorted by file name and the first
 * descriptor that fits wins: interface-types has "uefi", a target for
 * x86_64 whose machines glob matches q35, mapping.device "flash" in "split"
 * mode (code + nvram-template), the files exist, and the features fit the
 * request (--secure-boot: secure-boot + enrolled-keys; otherwise no
 * secure-boot firmware, which would drag in SMM for nothing).
 * Descriptors are outside input: malformed ones are skipped with a warning.
 */
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vm-private.h"

#define FW_MAX_FILE (64 * 1024)

void img_vm_firmware_release(struct img_vm_firmware *fw)
{
	free(fw->descriptor);
	free(fw->code);
	free(fw->code_format);
	free(fw->vars);
	free(fw->vars_format);
	memset(fw, 0, sizeof(*fw));
}

static int has_string(struct json_object *arr, const char *s)
{
	if (!arr || !json_object_is_type(arr, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		struct json_object *e = json_object_array_get_idx(arr, i);

		if (json_object_is_type(e, json_type_string) &&
		    !strcmp(json_object_get_string(e), s))
			return 1;
	}
	return 0;
}

/* Does a machines glob cover q35? We launch "q35", an alias of the newest
 * pc-q35-X.Y; the version is unknown here, so any pattern whose literal
 * prefix is compatible with "pc-q35-" counts. */
static int machine_matches(const char *pat)
{
	static const char fam[] = "pc-q35-";
	size_t lit = strcspn(pat, "*?[");
	size_t n = IMG_MIN(lit, sizeof(fam) - 1);

	if (!fnmatch(pat, "q35", 0))
		return 1;
	if (lit < sizeof(fam) - 1 && lit == strlen(pat))
		return 0; /* a literal shorter than the family name: e.g. "pc" */
	return !strncmp(pat, fam, n);
}

static int target_fits(struct json_object *targets)
{
	if (!targets || !json_object_is_type(targets, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(targets); i++) {
		struct json_object *t = json_object_array_get_idx(targets, i), *arch, *mach;

		if (!json_object_object_get_ex(t, "architecture", &arch) ||
		    !json_object_is_type(arch, json_type_string) ||
		    strcmp(json_object_get_string(arch), "x86_64"))
			continue;
		if (!json_object_object_get_ex(t, "machines", &mach) ||
		    !json_object_is_type(mach, json_type_array))
			continue;
		for (size_t j = 0; j < json_object_array_length(mach); j++) {
			struct json_object *m = json_object_array_get_idx(mach, j);

			if (json_object_is_type(m, json_type_string) &&
			    machine_matches(json_object_get_string(m)))
				return 1;
		}
	}
	return 0;
}

/* mapping.<key>: {"filename": ..., "format": ...}; format defaults to raw. */
static int get_file(struct json_object *mapping, const char *key, char **file, char **format)
{
	struct json_object *o, *fn, *fmt;
	const char *f = "raw";

	if (!json_object_object_get_ex(mapping, key, &o) ||
	    !json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "filename", &fn) ||
	    !json_object_is_type(fn, json_type_string))
		return -EINVAL;
	if (json_object_object_get_ex(o, "format", &fmt)) {
		if (!json_object_is_type(fmt, json_type_string))
			return -EINVAL;
		f = json_object_get_string(fmt);
	}
	if (strcmp(f, "raw") && strcmp(f, "qcow2"))
		return -EINVAL;
	if (json_object_get_string(fn)[0] != '/')
		return -EINVAL;
	*file = strdup(json_object_get_string(fn));
	*format = strdup(f);
	return *file && *format ? 0 : -ENOMEM;
}

int img_vm_firmware_parse(struct img_ctx *ctx, const char *path, const char *json, size_t len,
                          int secure_boot, struct img_vm_firmware *fw)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *root, *v, *mapping, *features = NULL;
	int r = 1;

	memset(fw, 0, sizeof(*fw));
	if (!tok)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	root = json_tokener_parse_ex(tok, json, (int)len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(root, json_type_object)) {
		json_tokener_free(tok);
		json_object_put(root);
		return img_set_error(ctx, -EINVAL, "%s: not a firmware descriptor (bad JSON)",
		                     path);
	}
	json_tokener_free(tok);

	if (!json_object_object_get_ex(root, "interface-types", &v) || !has_string(v, "uefi"))
		goto out;
	if (!json_object_object_get_ex(root, "targets", &v) || !target_fits(v))
		goto out;
	if (!json_object_object_get_ex(root, "mapping", &mapping) ||
	    !json_object_is_type(mapping, json_type_object))
		goto bad;
	if (!json_object_object_get_ex(mapping, "device", &v) ||
	    !json_object_is_type(v, json_type_string))
		goto bad;
	if (strcmp(json_object_get_string(v), "flash"))
		goto out;
	/* Only split mode gives a per-VM variable store (a missing mode = split). */
	if (json_object_object_get_ex(mapping, "mode", &v) &&
	    (!json_object_is_type(v, json_type_string) ||
	     strcmp(json_object_get_string(v), "split")))
		goto out;
	json_object_object_get_ex(root, "features", &features);
	fw->requires_smm = has_string(features, "requires-smm");
	fw->secure_boot = has_string(features, "secure-boot");
	fw->enrolled_keys = has_string(features, "enrolled-keys");
	/* IMG_VM_SB_SETUP: the reference's OVMF with secureBoot (no keys, setup
	 * mode: unsigned loaders boot); IMG_VM_SB_ENROLLED: keys enrolled. */
	if (secure_boot
	        ? !fw->secure_boot || fw->enrolled_keys != (secure_boot == IMG_VM_SB_ENROLLED)
	        : fw->secure_boot)
		goto out;
	if (get_file(mapping, "executable", &fw->code, &fw->code_format) < 0 ||
	    get_file(mapping, "nvram-template", &fw->vars, &fw->vars_format) < 0) {
		img_vm_firmware_release(fw);
		goto bad;
	}
	fw->descriptor = strdup(path);
	r = 0;
out:
	json_object_put(root);
	if (r)
		img_vm_firmware_release(fw);
	return r;
bad:
	json_object_put(root);
	img_vm_firmware_release(fw);
	return img_set_error(ctx, -EINVAL,
	                     "%s: firmware descriptor lacks mapping.device, executable or "
	                     "nvram-template (or a format other than raw/qcow2)",
	                     path);
}

struct fw_entry {
	char name[256];
	char *path; /* NULL: masked */
};

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct fw_entry *)a)->name, ((const struct fw_entry *)b)->name);
}

static int collect(const char *dir, struct fw_entry **ents, size_t *n, size_t *cap)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return 0; /* a missing directory is normal */
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name), i;
		struct stat st;
		char *path;

		if (l < 6 || l >= sizeof((*ents)->name) || strcmp(de->d_name + l - 5, ".json") ||
		    de->d_name[0] == '.')
			continue;
		if (asprintf(&path, "%s/%s", dir, de->d_name) < 0) {
			closedir(d);
			return -ENOMEM;
		}
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode)) {
			free(path);
			continue;
		}
		if (st.st_size == 0) { /* an empty file masks lower-priority ones */
			free(path);
			path = NULL;
		}
		for (i = 0; i < *n; i++)
			if (!strcmp((*ents)[i].name, de->d_name))
				break;
		if (i == *n) {
			if (*n == *cap) {
				size_t nc = *cap ? *cap * 2 : 16;
				struct fw_entry *ne = realloc(*ents, nc * sizeof(*ne));

				if (!ne) {
					free(path);
					closedir(d);
					return -ENOMEM;
				}
				*ents = ne;
				*cap = nc;
			}
			strcpy((*ents)[i].name, de->d_name);
			(*ents)[i].path = NULL;
			(*n)++;
		}
		free((*ents)[i].path);
		(*ents)[i].path = path;
	}
	closedir(d);
	return 0;
}

static int read_small(const char *path, char **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	int r;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size > FW_MAX_FILE) {
		close(fd);
		return -EFBIG;
	}
	*len = (size_t)st.st_size;
	*buf = malloc(*len + 1);
	if (!*buf) {
		close(fd);
		return -ENOMEM;
	}
	r = img_pread_full(fd, *buf, *len, 0);
	close(fd);
	if (r < 0) {
		free(*buf);
		return r;
	}
	(*buf)[*len] = '\0';
	return 0;
}

int img_vm_firmware_find(struct img_ctx *ctx, const char *const *dirs, size_t ndirs,
                         int secure_boot, struct img_vm_firmware *fw)
{
	struct fw_entry *ents = NULL;
	size_t n = 0, cap = 0;
	int r = 0, found = 0;

	memset(fw, 0, sizeof(*fw));
	for (size_t i = 0; i < ndirs && r >= 0; i++)
		if (dirs[i])
			r = collect(dirs[i], &ents, &n, &cap);
	if (r < 0)
		goto out;
	if (n) /* qsort wants a valid pointer even for none */
		qsort(ents, n, sizeof(*ents), cmp_entry);
	for (size_t i = 0; i < n && !found; i++) {
		char *buf = NULL;
		size_t len = 0;
		int p;

		if (!ents[i].path)
			continue;
		if ((p = read_small(ents[i].path, &buf, &len)) < 0) {
			img_log(ctx, IMG_LOG_WARN, "%s: skipped: %s", ents[i].path, strerror(-p));
			continue;
		}
		p = img_vm_firmware_parse(ctx, ents[i].path, buf, len, secure_boot, fw);
		free(buf);
		if (p < 0) {
			img_log(ctx, IMG_LOG_WARN, "%s (skipped)", img_ctx_error(ctx));
			img_ctx_clear_error(ctx);
			continue;
		}
		if (p > 0)
			continue;
		if (access(fw->code, R_OK) || access(fw->vars, R_OK)) {
			img_log(ctx, IMG_LOG_INFO, "%s: skipped: %s or %s is not readable",
			        ents[i].path, fw->code, fw->vars);
			img_vm_firmware_release(fw);
			continue;
		}
		found = 1;
	}
	r = found ? 0 : -ENOENT;
	if (!found)
		img_set_error(ctx, r, "no UEFI firmware descriptor fits (x86_64, q35, flash%s)",
		              secure_boot == IMG_VM_SB_ENROLLED ? ", secure-boot with enrolled-keys"
		              : secure_boot ? ", secure-boot without enrolled keys"
		                            : "");
out:
	for (size_t i = 0; i < n; i++)
		free(ents[i].path);
	free(ents);
	if (r == -ENOMEM)
		img_set_error(ctx, r, "out of memory");
	return r;
}
