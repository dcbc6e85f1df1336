/*
 * nixdb.h -- the closure of a store path from a Nix database, read-only.
 *
 * Nix keeps what is valid in its store in an SQLite database
 * (/nix/var/nix/db/db.sqlite): table ValidPaths (id, path, hash, narSize,
 * deriver, ...) and table Refs (referrer, reference: ValidPaths ids). This
 * reads the references closure of one path from it, without writing or
 * locking anything, and gives what closureInfo would have built: the store
 * paths and the registration text `nix-store --load-db` reads (per path:
 * the path, its NAR hash, its NAR size, an empty deriver line, the number
 * of references, the references).
 *
 *   struct img_nixdb_closure c;
 *   img_nixdb_closure(ctx, "/nix/var/nix/db/db.sqlite", "/nix/store/...-system", &c);
 *   ... c.paths[i], c.registration ...
 *   img_nixdb_closure_release(&c);
 */
#ifndef IMG_NIXDB_H
#define IMG_NIXDB_H

#include <stddef.h>
#include <img/context.h>

#ifdef __cplusplus
extern "C" {
#endif

struct img_nixdb_closure {
	char **paths; /* sorted bytewise, unique; @path among them */
	size_t npaths;
	char *registration; /* records sorted by path, references sorted */
	size_t registration_len;
};

/*
 * The closure of store path @path in database @db. Errors name the file:
 * not a Nix database, @path not valid in it, a reference to a path it does
 * not hold.
 */
IMG_EXPORT int img_nixdb_closure(struct img_ctx *ctx, const char *db, const char *path,
                                 struct img_nixdb_closure *out);
IMG_EXPORT void img_nixdb_closure_release(struct img_nixdb_closure *c);

#ifdef __cplusplus
}
#endif
#endif
