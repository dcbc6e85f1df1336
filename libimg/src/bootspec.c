/*
 * bootspec.c -- read a NixOS boot.json (bootspec v1, RFC 0125) with json-c.
 *
 * Spec: RFC 0125 and the documents NixOS writes (nixos/modules/system/
 * activation/bootspec.nix): "org.nixos.bootspec.v1" with kernel, initrd,
 * init, kernelParams, label, system, toplevel and optional initrdSecrets;
 * "org.nixos.specialisation.v1" mapping names to whole bootspec documents;
 * the "org.nixos.systemd-boot" extension with sortKey and devicetree.
 * Unknown keys are ignored (other extensions); the fields used are checked
 * for type and content, since boot.json is input from the closure.
 */
#include <stdio.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "private.h"
#include <img/bootspec.h>

#define V1        "org.nixos.bootspec.v1"
#define SPECS     "org.nixos.specialisation.v1"
#define SDBOOT    "org.nixos.systemd-boot"
#define MAX_DEPTH 16
#define MAX_SPECS 256

int img_bootspec_text_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7F)
			return 0;
	return 1;
}

struct ps {
	struct img_ctx *ctx;
	const char *file;
	const char *store;
	char where[512]; /* the object being read: "org.nixos.bootspec.v1" */
};

static int bad(struct ps *p, const char *key, const char *why)
{
	const char *k = key ? key : "";

	if (!*p->where && !*k)
		return img_set_error(p->ctx, -EINVAL, "%s: %s", p->file, why);
	return img_set_error(p->ctx, -EINVAL, "%s: %s%s%s: %s", p->file, p->where,
	                     *k && *p->where ? "." : "", k, why);
}

/* A string field: present (unless optional), a string, no control byte or NUL. */
static int get_text(struct ps *p, struct json_object *o, const char *key, int optional, char **out)
{
	struct json_object *v;
	const char *s;
	int len;

	*out = NULL;
	if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
		if (optional)
			return 0;
		return bad(p, key, "missing");
	}
	if (!json_object_is_type(v, json_type_string))
		return bad(p, key, "not a string");
	s = json_object_get_string(v);
	len = json_object_get_string_len(v);
	if ((size_t)len != strlen(s) || !img_bootspec_text_ok(s))
		return bad(p, key, "holds a control character (a newline, a NUL, ...)");
	*out = img_strdup(s);
	return *out ? 0 : img_set_error(p->ctx, -ENOMEM, "out of memory");
}

/* A path field: a text, absolute, inside the store, no "." or ".." component. */
static int get_path(struct ps *p, struct json_object *o, const char *key, int optional, char **out)
{
	size_t n = strlen(p->store);
	const char *s;
	int r = get_text(p, o, key, optional, out);

	if (r < 0 || !*out)
		return r;
	s = *out;
	if (strncmp(s, p->store, n) || s[n] != '/' || !s[n + 1] || s[n + 1] == '/') {
		char why[600];

		snprintf(why, sizeof(why), "'%s' is not a path in the store %s", s, p->store);
		return bad(p, key, why);
	}
	for (const char *c = s; *c;) {
		size_t l;

		while (*c == '/')
			c++;
		l = strcspn(c, "/");
		if ((l == 1 && c[0] == '.') || (l == 2 && c[0] == '.' && c[1] == '.'))
			return bad(p, key, "a path with a '.' or '..' component");
		c += l;
	}
	if (strlen(s) >= 4000)
		return bad(p, key, "path too long");
	return 0;
}

static int name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 128 || s[0] == '.' || s[0] == '-')
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.' || *s == '+'))
			return 0;
	return 1;
}

static void free_system(struct img_bootspec_system *s)
{
	free(s->name);
	free(s->kernel);
	free(s->initrd);
	free(s->init);
	free(s->toplevel);
	free(s->system);
	free(s->label);
	for (size_t i = 0; i < s->nkernel_params; i++)
		free(s->kernel_params[i]);
	free(s->kernel_params);
	free(s->sort_key);
	free(s->devicetree);
	free(s->initrd_secrets);
	memset(s, 0, sizeof(*s));
}

void img_bootspec_free(struct img_bootspec *bs)
{
	if (!bs)
		return;
	free_system(&bs->sys);
	for (size_t i = 0; i < bs->nspecs; i++)
		free_system(&bs->specs[i]);
	free(bs->specs);
	free(bs);
}

/* Append @key to p->where; returns the old length, to restore. */
static size_t push(struct ps *p, const char *key)
{
	size_t n = strlen(p->where);

	snprintf(p->where + n, sizeof(p->where) - n, "%s%s", n ? "." : "", key);
	return n;
}

static int get_params(struct ps *p, struct json_object *v1, struct img_bootspec_system *s)
{
	struct json_object *a;
	size_t n;

	if (!json_object_object_get_ex(v1, "kernelParams", &a))
		return bad(p, "kernelParams", "missing");
	if (!json_object_is_type(a, json_type_array))
		return bad(p, "kernelParams", "not an array of strings");
	n = json_object_array_length(a);
	if (n > 4096)
		return bad(p, "kernelParams", "more than 4096 parameters");
	s->kernel_params = calloc(n ? n : 1, sizeof(char *));
	if (!s->kernel_params)
		return img_set_error(p->ctx, -ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
		const char *t;
		char why[96];

		snprintf(why, sizeof(why), "kernelParams[%zu]", i);
		if (!json_object_is_type(e, json_type_string))
			return bad(p, why, "not a string");
		t = json_object_get_string(e);
		if ((size_t)json_object_get_string_len(e) != strlen(t) || !img_bootspec_text_ok(t))
			return bad(p, why, "holds a control character (a newline, a NUL, ...)");
		if (!*t || strchr(t, ' '))
			return bad(p, why, "empty or holds a space (one parameter per element)");
		s->kernel_params[i] = img_strdup(t);
		if (!s->kernel_params[i])
			return img_set_error(p->ctx, -ENOMEM, "out of memory");
		s->nkernel_params = i + 1;
	}
	return 0;
}

/* One bootspec document (the top one, or a specialisation's) into @s. */
static int read_doc(struct ps *p, struct json_object *doc, struct img_bootspec_system *s)
{
	struct json_object *v1, *ext;
	size_t mark;
	int r;

	if (!json_object_is_type(doc, json_type_object))
		return bad(p, NULL, "not a JSON object");
	if (!json_object_object_get_ex(doc, V1, &v1))
		return bad(p, V1, "missing (not a bootspec v1 document)");
	mark = push(p, V1);
	if (!json_object_is_type(v1, json_type_object))
		return bad(p, NULL, "not an object");
	if ((r = get_path(p, v1, "kernel", 0, &s->kernel)) < 0 ||
	    (r = get_path(p, v1, "initrd", 0, &s->initrd)) < 0 ||
	    (r = get_path(p, v1, "init", 0, &s->init)) < 0 ||
	    (r = get_path(p, v1, "toplevel", 0, &s->toplevel)) < 0 ||
	    (r = get_text(p, v1, "label", 0, &s->label)) < 0 ||
	    (r = get_text(p, v1, "system", 0, &s->system)) < 0 ||
	    (r = get_path(p, v1, "initrdSecrets", 1, &s->initrd_secrets)) < 0 ||
	    (r = get_params(p, v1, s)) < 0)
		return r;
	p->where[mark] = 0;
	if (json_object_object_get_ex(doc, SDBOOT, &ext) &&
	    !json_object_is_type(ext, json_type_null)) {
		mark = push(p, SDBOOT);
		if (!json_object_is_type(ext, json_type_object))
			return bad(p, NULL, "not an object");
		if ((r = get_text(p, ext, "sortKey", 1, &s->sort_key)) < 0 ||
		    (r = get_path(p, ext, "devicetree", 1, &s->devicetree)) < 0)
			return r;
		if (s->sort_key && !*s->sort_key)
			return bad(p, "sortKey", "empty");
		p->where[mark] = 0;
	}
	if (!s->sort_key && !(s->sort_key = img_strdup("nixos")))
		return img_set_error(p->ctx, -ENOMEM, "out of memory");
	return 0;
}

static int cmp_spec(const void *a, const void *b)
{
	return strcmp(((const struct img_bootspec_system *)a)->name,
	              ((const struct img_bootspec_system *)b)->name);
}

static int read_specs(struct ps *p, struct json_object *doc, struct img_bootspec *bs)
{
	struct json_object *specs;
	size_t n, mark;
	int r;

	if (!json_object_object_get_ex(doc, SPECS, &specs) ||
	    json_object_is_type(specs, json_type_null))
		return 0;
	mark = push(p, SPECS);
	if (!json_object_is_type(specs, json_type_object))
		return bad(p, NULL, "not an object");
	n = (size_t)json_object_object_length(specs);
	if (n > MAX_SPECS)
		return bad(p, NULL, "more than 256 specialisations");
	bs->specs = calloc(n ? n : 1, sizeof(*bs->specs));
	if (!bs->specs)
		return img_set_error(p->ctx, -ENOMEM, "out of memory");
	json_object_object_foreach(specs, key, val)
	{
		struct img_bootspec_system *s = &bs->specs[bs->nspecs++];
		struct json_object *inner;
		size_t m;

		if (!name_ok(key)) {
			char why[300];

			snprintf(why, sizeof(why),
			         "specialisation name '%.200s' is not usable in a file name "
			         "(letters, digits, '_', '-', '.', '+', not starting with '.' or "
			         "'-')",
			         img_bootspec_text_ok(key) ? key : "?");
			return bad(p, NULL, why);
		}
		s->name = img_strdup(key);
		if (!s->name)
			return img_set_error(p->ctx, -ENOMEM, "out of memory");
		m = push(p, key);
		r = read_doc(p, val, s);
		if (r < 0)
			return r;
		/* nested specialisations are not booted, but must be well-typed */
		if (json_object_object_get_ex(val, SPECS, &inner) &&
		    !json_object_is_type(inner, json_type_null) &&
		    !json_object_is_type(inner, json_type_object))
			return bad(p, SPECS, "not an object");
		p->where[m] = 0;
	}
	qsort(bs->specs, bs->nspecs, sizeof(*bs->specs), cmp_spec);
	p->where[mark] = 0;
	return 0;
}

int img_bootspec_parse(struct img_ctx *ctx, const char *text, size_t len, const char *file,
                       const char *store_dir, struct img_bootspec **out)
{
	struct ps p = { .ctx = ctx, .file = file, .store = store_dir ? store_dir : "/nix/store" };
	struct json_tokener *tok;
	struct json_object *doc;
	struct img_bootspec *bs;
	size_t end;
	int r;

	*out = NULL;
	if (len > IMG_BOOTSPEC_MAX)
		return img_set_error(ctx, -EFBIG, "%s: larger than %u bytes: not a boot.json", file,
		                     IMG_BOOTSPEC_MAX);
	tok = json_tokener_new_ex(MAX_DEPTH);
	if (!tok)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	doc = json_tokener_parse_ex(tok, text, (int)len);
	end = json_tokener_get_parse_end(tok);
	if (!doc || json_tokener_get_error(tok) != json_tokener_success) {
		enum json_tokener_error e = json_tokener_get_error(tok);

		r = img_set_error(ctx, -EINVAL, "%s: not valid JSON (%s, at byte %zu)", file,
		                  e == json_tokener_continue ? "unexpected end of input"
		                                             : json_tokener_error_desc(e),
		                  end);
		json_object_put(doc);
		json_tokener_free(tok);
		return r;
	}
	json_tokener_free(tok);
	for (size_t i = end; i < len; i++)
		if (text[i] != ' ' && text[i] != '\n' && text[i] != '\t' && text[i] != '\r') {
			json_object_put(doc);
			return img_set_error(ctx, -EINVAL,
			                     "%s: not valid JSON (trailing data at byte %zu)", file,
			                     i);
		}
	bs = calloc(1, sizeof(*bs));
	if (!bs) {
		json_object_put(doc);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	r = read_doc(&p, doc, &bs->sys);
	if (r >= 0)
		r = read_specs(&p, doc, bs);
	json_object_put(doc);
	if (r < 0) {
		img_bootspec_free(bs);
		return r;
	}
	*out = bs;
	return 0;
}
