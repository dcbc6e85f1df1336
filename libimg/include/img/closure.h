/*
 * closure.h -- the set of store paths an image holds.
 *
 * A closure comes as a file listing store paths one per line (closureInfo's
 * `store-paths`), as a closureInfo directory (`store-paths` + `registration`),
 * or on standard input ("-"). Every line is checked against the store path
 * rules: absolute, directly under the store directory, a 32-character
 * nix-base32 hash part, '-', a name of the allowed characters. Duplicate
 * lines collapse; nested paths, missing paths and an empty closure are
 * errors naming file:line. Paths are kept sorted bytewise.
 *
 * Calling sequence:
 *   struct img_closure_opts o = { .store_dir = "/nix/store", .root = "/" };
 *   img_closure_load(ctx, "closure.txt", &o, &c);
 *   ... c->paths[i] (absolute store paths), img_closure_host_path() ...
 *   img_closure_free(c);
 */
#ifndef IMG_CLOSURE_H
#define IMG_CLOSURE_H

#include <stddef.h>
#include <img/context.h>

#ifdef __cplusplus
extern "C" {
#endif

struct img_closure_opts {
	const char *store_dir; /* default "/nix/store" */
	const char *root;      /* host directory standing for "/"; default "/" */
	int no_check_exists;   /* do not require the paths to exist under root */
};

struct img_closure {
	char *store_dir; /* normalised, no trailing '/' */
	char *root;      /* normalised, no trailing '/' ("" for "/") */
	char **paths;    /* absolute store paths, sorted bytewise, unique */
	size_t npaths;
	char *registration; /* host path of the registration file, or NULL */
	int info_dir;       /* loaded from a closureInfo directory */
	char *source;       /* what was loaded, for messages */
};

/* Load a closure from @spec: a file, a closureInfo directory, or "-". */
IMG_EXPORT int img_closure_load(struct img_ctx *ctx, const char *spec,
                                const struct img_closure_opts *opts, struct img_closure **out);
/* Parse a store-paths list from memory; @name is used in messages. */
IMG_EXPORT int img_closure_parse(struct img_ctx *ctx, const char *name, const char *buf, size_t len,
                                 const struct img_closure_opts *opts, struct img_closure **out);
IMG_EXPORT void img_closure_free(struct img_closure *c);

/*
 * The registration file in canonical form: records sorted by path, each
 * record's references sorted, so the image does not depend on the order
 * Nix wrote them in. Checked against the closure, each an error naming
 * file:line: every registered path and every reference is a store path of
 * @c, the NAR hash is a well-formed SHA-256 (sha256: with nix-base32, hex or
 * base64, or SRI), the NAR size and the count are decimal numbers, the
 * deriver is empty or a store path, no path is registered twice. Closure
 * paths without a record are one warning. A registration reached through a
 * symlink has no line quoted in messages. @out is malloc'ed; the caller
 * frees it.
 */
IMG_EXPORT int img_closure_registration(struct img_ctx *ctx, const struct img_closure *c,
                                        char **out, size_t *outlen);

/* Is @name (the part after the store dir) a valid store path base name? */
IMG_EXPORT int img_store_name_valid(const char *name, size_t len);
/* The host path of store path @path: root + path, into @buf. */
IMG_EXPORT int img_closure_host_path(const struct img_closure *c, const char *path, char *buf,
                                     size_t len);

#ifdef __cplusplus
}
#endif
#endif
