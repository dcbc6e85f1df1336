/*
 * manifest.c -- write and read the image manifest (docs/manifest.md,
 * version 1) with json-c.
 *
 * The writer emits keys in the documented order (json-c keeps insertion
 * order), two-space indentation, `"key": value`, unescaped '/', and a final
 * newline. The reader is lenient about unknown keys and strict about types
 * and the version: a manifest is outside input.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <json-c/json.h>

#include "private.h"
#include <img/manifest.h>

static int add_str(struct json_object *o, const char *key, const char *val)
{
	struct json_object *v;

	if (!val)
		return 0;
	v = json_object_new_string(val);
	if (!v || json_object_object_add(o, key, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static int add_int(struct json_object *o, const char *key, int64_t val)
{
	struct json_object *v = json_object_new_int64(val);

	if (!v || json_object_object_add(o, key, v) < 0) {
		json_object_put(v);
		return -ENOMEM;
	}
	return 0;
}

static int add_verity(struct json_object *parent, const struct img_manifest_verity *v)
{
	struct json_object *o = json_object_new_object();
	int r = 0;

	if (!o || json_object_object_add(parent, "verity", o) < 0) {
		json_object_put(o);
		return -ENOMEM;
	}
	r |= add_str(o, "root_hash", v->root_hash);
	r |= add_str(o, "hash_algorithm", v->hash_algorithm);
	r |= add_int(o, "data_block_size", v->data_block_size);
	r |= add_int(o, "hash_block_size", v->hash_block_size);
	r |= add_int(o, "data_offset", (int64_t)v->data_offset);
	r |= add_int(o, "data_blocks", (int64_t)v->data_blocks);
	r |= add_int(o, "hash_offset", (int64_t)v->hash_offset);
	r |= add_int(o, "hash_size", (int64_t)v->hash_size);
	r |= add_str(o, "salt", v->salt);
	r |= add_str(o, "uuid", v->uuid);
	return r;
}

static int add_partition(struct json_object *arr, const struct img_manifest_partition *p)
{
	struct json_object *o = json_object_new_object();
	int r = 0;

	if (!o)
		return -ENOMEM;
	r |= add_int(o, "number", p->number);
	r |= add_str(o, "role", p->role);
	r |= add_str(o, "name", p->name);
	r |= add_str(o, "type", p->type);
	r |= add_str(o, "uuid", p->uuid);
	r |= add_int(o, "offset", (int64_t)p->offset);
	r |= add_int(o, "size", (int64_t)p->size);
	r |= add_str(o, "filesystem", p->filesystem);
	r |= add_str(o, "label", p->label);
	r |= add_str(o, "fs_uuid", p->fs_uuid);
	r |= add_str(o, "fs_compression", p->fs_compression);
	if (p->verity)
		r |= add_verity(o, p->verity);
	if (r || json_object_array_add(arr, o) < 0) {
		json_object_put(o);
		return -ENOMEM;
	}
	return 0;
}

static int add_entry(struct json_object *arr, const struct img_manifest_entry *e)
{
	struct json_object *o = json_object_new_object(), *b;
	int r = 0;

	if (!o)
		return -ENOMEM;
	r |= add_str(o, "id", e->id);
	r |= add_str(o, "title", e->title);
	if (!e->specialisation) {
		if (json_object_object_add(o, "specialisation", NULL) < 0)
			r = -ENOMEM;
	} else {
		r |= add_str(o, "specialisation", e->specialisation);
	}
	r |= add_str(o, "loader", e->loader);
	r |= add_str(o, "path", e->path);
	r |= add_str(o, "kernel", e->kernel);
	r |= add_str(o, "initrd", e->initrd);
	r |= add_str(o, "options", e->options);
	b = json_object_new_boolean(e->is_default);
	if (!b || json_object_object_add(o, "default", b) < 0) {
		json_object_put(b);
		r = -ENOMEM;
	}
	if (r || json_object_array_add(arr, o) < 0) {
		json_object_put(o);
		return -ENOMEM;
	}
	return 0;
}

static struct json_object *build(const struct img_manifest *m)
{
	struct json_object *o = json_object_new_object(), *arr;
	int r = 0;

	if (!o)
		return NULL;
	r |= add_int(o, "manifest_version",
	             m->manifest_version ? m->manifest_version : IMG_MANIFEST_VERSION);
	r |= add_str(o, "generator", m->generator);
	r |= add_str(o, "image", m->image);
	r |= add_str(o, "format", m->format);
	r |= add_str(o, "compression", m->compression ? m->compression : "none");
	r |= add_int(o, "virtual_size", (int64_t)m->virtual_size);
	r |= add_str(o, "mode", m->mode);
	r |= add_str(o, "boot", m->boot);
	r |= add_str(o, "partition_table", m->partition_table);
	r |= add_str(o, "disk_guid", m->disk_guid);
	arr = json_object_new_array();
	if (!arr || json_object_object_add(o, "partitions", arr) < 0) {
		json_object_put(arr);
		json_object_put(o);
		return NULL;
	}
	for (size_t i = 0; i < m->npartitions; i++)
		r |= add_partition(arr, &m->partitions[i]);
	r |= add_str(o, "system", m->system);
	if (m->system)
		r |= add_str(o, "kernel_params", m->kernel_params ? m->kernel_params : "");
	r |= add_str(o, "bootloader", m->bootloader);
	r |= add_str(o, "boot_source", m->boot_source);
	if (m->nentries) {
		arr = json_object_new_array();
		if (!arr || json_object_object_add(o, "entries", arr) < 0) {
			json_object_put(arr);
			json_object_put(o);
			return NULL;
		}
		for (size_t i = 0; i < m->nentries; i++)
			r |= add_entry(arr, &m->entries[i]);
	}
	r |= add_str(o, "sha256", m->sha256);
	r |= add_str(o, "seed", m->seed);
	r |= add_int(o, "epoch", m->epoch);
	if (r) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

int img_manifest_write(struct img_ctx *ctx, const char *path, const struct img_manifest *m)
{
	struct json_object *o = build(m);
	const char *text;
	size_t len;
	int fd, r;

	if (!o)
		return img_set_error(ctx, -ENOMEM, "%s: out of memory", path);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
	                                             JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text) {
		json_object_put(o);
		return img_set_error(ctx, -ENOMEM, "%s: out of memory", path);
	}
	len = strlen(text);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		json_object_put(o);
		return img_set_error(ctx, r, "%s: %s", path, strerror(-r));
	}
	r = img_pwrite_full(fd, text, len, 0);
	if (r == 0)
		r = img_pwrite_full(fd, "\n", 1, len);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	json_object_put(o);
	if (r < 0)
		return img_set_error(ctx, r, "%s: %s", path, strerror(-r));
	return 0;
}

/* ---- reader ------------------------------------------------------------ */

struct rd {
	struct img_ctx *ctx;
	const char *path;
};

static int type_error(struct rd *rd, const char *key, const char *want)
{
	return img_set_error(rd->ctx, -EINVAL, "%s: \"%s\" is not %s", rd->path, key, want);
}

/* A string key: absent or null -> NULL; else must be a string. */
static int get_str(struct rd *rd, struct json_object *o, const char *key, char **out)
{
	struct json_object *v;

	*out = NULL;
	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_string))
		return type_error(rd, key, "a string");
	*out = img_strdup(json_object_get_string(v));
	return *out ? 0 : img_set_error(rd->ctx, -ENOMEM, "out of memory");
}

static int get_int(struct rd *rd, struct json_object *o, const char *key, int64_t min, int64_t *out)
{
	struct json_object *v;

	*out = 0;
	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
		return 0;
	if (!json_object_is_type(v, json_type_int))
		return type_error(rd, key, "an integer");
	errno = 0;
	*out = json_object_get_int64(v);
	if (errno || *out < min)
		return type_error(rd, key, "an integer in range");
	return 0;
}

static void free_part(struct img_manifest_partition *p)
{
	free(p->role);
	free(p->name);
	free(p->type);
	free(p->uuid);
	free(p->filesystem);
	free(p->label);
	free(p->fs_uuid);
	free(p->fs_compression);
	if (p->verity) {
		free(p->verity->root_hash);
		free(p->verity->hash_algorithm);
		free(p->verity->salt);
		free(p->verity->uuid);
		free(p->verity);
	}
}

static void free_entry(struct img_manifest_entry *e)
{
	free(e->id);
	free(e->title);
	free(e->specialisation);
	free(e->loader);
	free(e->path);
	free(e->kernel);
	free(e->initrd);
	free(e->options);
}

void img_manifest_free(struct img_manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nentries; i++)
		free_entry(&m->entries[i]);
	free(m->entries);
	free(m->boot_source);
	for (size_t i = 0; i < m->npartitions; i++)
		free_part(&m->partitions[i]);
	free(m->partitions);
	free(m->generator);
	free(m->image);
	free(m->format);
	free(m->compression);
	free(m->mode);
	free(m->boot);
	free(m->partition_table);
	free(m->disk_guid);
	free(m->system);
	free(m->kernel_params);
	free(m->bootloader);
	free(m->sha256);
	free(m->seed);
	free(m);
}

static int read_verity(struct rd *rd, struct json_object *o, struct img_manifest_partition *p)
{
	struct img_manifest_verity *v;
	int64_t n;
	int r;

	if (!json_object_is_type(o, json_type_object))
		return type_error(rd, "verity", "an object");
	v = p->verity = calloc(1, sizeof(*v));
	if (!v)
		return img_set_error(rd->ctx, -ENOMEM, "out of memory");
	if ((r = get_str(rd, o, "root_hash", &v->root_hash)) < 0 ||
	    (r = get_str(rd, o, "hash_algorithm", &v->hash_algorithm)) < 0 ||
	    (r = get_str(rd, o, "salt", &v->salt)) < 0 ||
	    (r = get_str(rd, o, "uuid", &v->uuid)) < 0)
		return r;
	if ((r = get_int(rd, o, "data_block_size", 0, &n)) < 0)
		return r;
	if (n > UINT32_MAX)
		return type_error(rd, "data_block_size", "a block size");
	v->data_block_size = (uint32_t)n;
	if ((r = get_int(rd, o, "hash_block_size", 0, &n)) < 0)
		return r;
	if (n > UINT32_MAX)
		return type_error(rd, "hash_block_size", "a block size");
	v->hash_block_size = (uint32_t)n;
	if ((r = get_int(rd, o, "data_offset", 0, &n)) < 0)
		return r;
	v->data_offset = (uint64_t)n;
	if ((r = get_int(rd, o, "data_blocks", 0, &n)) < 0)
		return r;
	v->data_blocks = (uint64_t)n;
	if ((r = get_int(rd, o, "hash_offset", 0, &n)) < 0)
		return r;
	v->hash_offset = (uint64_t)n;
	if ((r = get_int(rd, o, "hash_size", 0, &n)) < 0)
		return r;
	v->hash_size = (uint64_t)n;
	return 0;
}

static int read_part(struct rd *rd, struct json_object *o, struct img_manifest_partition *p)
{
	struct json_object *vo;
	int64_t v;
	int r = 0;

	if (!json_object_is_type(o, json_type_object))
		return type_error(rd, "partitions", "an array of objects");
	if ((r = get_int(rd, o, "number", 0, &v)) < 0)
		return r;
	if (v > 256)
		return type_error(rd, "number", "a partition number");
	p->number = (unsigned)v;
	if ((r = get_int(rd, o, "offset", 0, &v)) < 0)
		return r;
	p->offset = (uint64_t)v;
	if ((r = get_int(rd, o, "size", 0, &v)) < 0)
		return r;
	p->size = (uint64_t)v;
	if ((r = get_str(rd, o, "role", &p->role)) < 0 ||
	    (r = get_str(rd, o, "name", &p->name)) < 0 ||
	    (r = get_str(rd, o, "type", &p->type)) < 0 ||
	    (r = get_str(rd, o, "uuid", &p->uuid)) < 0 ||
	    (r = get_str(rd, o, "filesystem", &p->filesystem)) < 0 ||
	    (r = get_str(rd, o, "label", &p->label)) < 0 ||
	    (r = get_str(rd, o, "fs_uuid", &p->fs_uuid)) < 0 ||
	    (r = get_str(rd, o, "fs_compression", &p->fs_compression)) < 0)
		return r;
	if (json_object_object_get_ex(o, "verity", &vo) && !json_object_is_type(vo, json_type_null))
		return read_verity(rd, vo, p);
	return 0;
}

static int read_entry(struct rd *rd, struct json_object *o, struct img_manifest_entry *e)
{
	struct json_object *v;
	int r;

	if (!json_object_is_type(o, json_type_object))
		return type_error(rd, "entries", "an array of objects");
	if ((r = get_str(rd, o, "id", &e->id)) < 0 ||
	    (r = get_str(rd, o, "title", &e->title)) < 0 ||
	    (r = get_str(rd, o, "specialisation", &e->specialisation)) < 0 ||
	    (r = get_str(rd, o, "loader", &e->loader)) < 0 ||
	    (r = get_str(rd, o, "path", &e->path)) < 0 ||
	    (r = get_str(rd, o, "kernel", &e->kernel)) < 0 ||
	    (r = get_str(rd, o, "initrd", &e->initrd)) < 0 ||
	    (r = get_str(rd, o, "options", &e->options)) < 0)
		return r;
	if (json_object_object_get_ex(o, "default", &v) &&
	    !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_boolean))
			return type_error(rd, "default", "a boolean");
		e->is_default = json_object_get_boolean(v);
	}
	return 0;
}

static int read_entries(struct rd *rd, struct json_object *o, struct img_manifest *m)
{
	struct json_object *arr;
	size_t n;
	int r;

	if (!json_object_object_get_ex(o, "entries", &arr) ||
	    json_object_is_type(arr, json_type_null))
		return 0;
	if (!json_object_is_type(arr, json_type_array))
		return type_error(rd, "entries", "an array");
	n = json_object_array_length(arr);
	if (n > 1024)
		return type_error(rd, "entries", "an array of at most 1024 entries");
	m->entries = calloc(n ? n : 1, sizeof(*m->entries));
	if (!m->entries)
		return img_set_error(rd->ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		m->nentries = i + 1;
		r = read_entry(rd, json_object_array_get_idx(arr, i), &m->entries[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int read_obj(struct rd *rd, struct json_object *o, struct img_manifest *m)
{
	struct json_object *arr;
	int64_t v;
	int r;

	if (!json_object_is_type(o, json_type_object))
		return img_set_error(rd->ctx, -EINVAL, "%s: not a JSON object", rd->path);
	if (!json_object_object_get_ex(o, "manifest_version", NULL))
		return img_set_error(rd->ctx, -EINVAL, "%s: no \"manifest_version\"", rd->path);
	if ((r = get_int(rd, o, "manifest_version", 0, &v)) < 0)
		return r;
	if (v != IMG_MANIFEST_VERSION)
		return img_set_error(rd->ctx, -EINVAL,
		                     "%s: manifest_version %lld is not supported (this reader "
		                     "knows version %d)",
		                     rd->path, (long long)v, IMG_MANIFEST_VERSION);
	m->manifest_version = (int)v;
	if ((r = get_int(rd, o, "virtual_size", 0, &v)) < 0)
		return r;
	m->virtual_size = (uint64_t)v;
	if ((r = get_int(rd, o, "epoch", INT64_MIN, &m->epoch)) < 0)
		return r;
	if ((r = get_str(rd, o, "generator", &m->generator)) < 0 ||
	    (r = get_str(rd, o, "image", &m->image)) < 0 ||
	    (r = get_str(rd, o, "format", &m->format)) < 0 ||
	    (r = get_str(rd, o, "compression", &m->compression)) < 0 ||
	    (r = get_str(rd, o, "mode", &m->mode)) < 0 ||
	    (r = get_str(rd, o, "boot", &m->boot)) < 0 ||
	    (r = get_str(rd, o, "partition_table", &m->partition_table)) < 0 ||
	    (r = get_str(rd, o, "disk_guid", &m->disk_guid)) < 0 ||
	    (r = get_str(rd, o, "system", &m->system)) < 0 ||
	    (r = get_str(rd, o, "kernel_params", &m->kernel_params)) < 0 ||
	    (r = get_str(rd, o, "bootloader", &m->bootloader)) < 0 ||
	    (r = get_str(rd, o, "boot_source", &m->boot_source)) < 0 ||
	    (r = get_str(rd, o, "sha256", &m->sha256)) < 0 ||
	    (r = get_str(rd, o, "seed", &m->seed)) < 0 || (r = read_entries(rd, o, m)) < 0)
		return r;
	if (!json_object_object_get_ex(o, "partitions", &arr) ||
	    json_object_is_type(arr, json_type_null))
		return 0;
	if (!json_object_is_type(arr, json_type_array))
		return type_error(rd, "partitions", "an array");
	size_t n = json_object_array_length(arr);
	if (n > 256)
		return type_error(rd, "partitions", "an array of at most 256 entries");
	m->partitions = calloc(n ? n : 1, sizeof(*m->partitions));
	if (!m->partitions)
		return img_set_error(rd->ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		m->npartitions = i + 1;
		r = read_part(rd, json_object_array_get_idx(arr, i), &m->partitions[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Manifests are small; anything over this is not one. */
#define MANIFEST_MAX (1u << 20)

int img_manifest_read(struct img_ctx *ctx, const char *path, struct img_manifest **out)
{
	struct rd rd = { ctx, path };
	struct json_tokener *tok;
	struct json_object *o;
	struct img_manifest *m;
	char *buf;
	ssize_t n;
	size_t len = 0;
	int fd, r;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		return img_set_error(ctx, r, "%s: %s", path, strerror(-r));
	}
	buf = malloc(MANIFEST_MAX + 1);
	if (!buf) {
		close(fd);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	while ((n = read(fd, buf + len, MANIFEST_MAX + 1 - len)) > 0) {
		len += (size_t)n;
		if (len > MANIFEST_MAX)
			break;
	}
	r = n < 0 ? -errno : 0;
	close(fd);
	if (r < 0 || len > MANIFEST_MAX) {
		free(buf);
		if (r < 0)
			return img_set_error(ctx, r, "%s: %s", path, strerror(-r));
		return img_set_error(ctx, -EFBIG, "%s: larger than %u bytes: not a manifest", path,
		                     MANIFEST_MAX);
	}
	tok = json_tokener_new();
	if (!tok) {
		free(buf);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	o = json_tokener_parse_ex(tok, buf, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) < len) {
		size_t end = json_tokener_get_parse_end(tok);
		int only_space = 1;

		for (size_t i = end; o && i < len; i++)
			if (buf[i] != ' ' && buf[i] != '\n' && buf[i] != '\t' && buf[i] != '\r')
				only_space = 0;
		if (!o || json_tokener_get_error(tok) != json_tokener_success || !only_space) {
			r = img_set_error(ctx, -EINVAL, "%s: not valid JSON (%s, at byte %zu)",
			                  path,
			                  o ? "trailing data"
			                    : json_tokener_error_desc(json_tokener_get_error(tok)),
			                  end);
			json_object_put(o);
			json_tokener_free(tok);
			free(buf);
			return r;
		}
	}
	json_tokener_free(tok);
	free(buf);
	m = calloc(1, sizeof(*m));
	if (!m) {
		json_object_put(o);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	r = read_obj(&rd, o, m);
	json_object_put(o);
	if (r < 0) {
		img_manifest_free(m);
		return r;
	}
	*out = m;
	return 0;
}
