/*
 * nixdb.c -- the references closure of a store path from Nix's SQLite
 * database (see img/nixdb.h), opened read-only.
 *
 * Nix runs its database in WAL mode. A read-only connection can read it
 * when the -shm file exists or the directory is writable; when neither
 * holds (a root-owned /nix/var/nix/db read by a user before Nix ever
 * created the -shm), the file is read as immutable instead, and said so:
 * then paths registered since the last checkpoint are not seen.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <img/nixdb.h>

#include "private.h"

/* The closure: every id reachable from the root through Refs. */
static const char closure_sql[] =
    "WITH RECURSIVE closure(id) AS ("
    "  SELECT id FROM ValidPaths WHERE path = ?1"
    "  UNION SELECT r.reference FROM Refs r JOIN closure c ON r.referrer = c.id)"
    " SELECT v.id, v.path, v.hash, v.narSize FROM ValidPaths v JOIN closure c ON v.id = c.id"
    " ORDER BY v.path";
static const char refs_sql[] = "SELECT v.path FROM Refs r JOIN ValidPaths v ON v.id = r.reference"
                               " WHERE r.referrer = ?1 ORDER BY v.path";

/* "file:" URI for @path with immutable=1 (percent-encoding what URIs reserve). */
static char *immutable_uri(const char *path)
{
	size_t n = strlen(path);
	char *out = malloc(n * 3 + 32), *p = out;

	if (!out)
		return NULL;
	p += sprintf(p, "file:");
	for (const unsigned char *q = (const unsigned char *)path; *q; q++) {
		if ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
		    (*q >= '0' && *q <= '9') || strchr("/-._~", *q))
			*p++ = (char)*q;
		else
			p += sprintf(p, "%%%02X", *q);
	}
	strcpy(p, "?immutable=1");
	return out;
}

static int open_db(struct img_ctx *ctx, const char *path, int immutable, sqlite3 **out)
{
	char *uri = immutable ? immutable_uri(path) : NULL;
	int rc;

	if (immutable && !uri)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	rc = sqlite3_open_v2(immutable ? uri : path, out,
	                     SQLITE_OPEN_READONLY | (immutable ? SQLITE_OPEN_URI : 0), NULL);
	free(uri);
	if (rc != SQLITE_OK) {
		int r = img_set_error(ctx, immutable ? -EIO : -EAGAIN, "Nix database %s: %s", path,
		                      *out ? sqlite3_errmsg(*out) : sqlite3_errstr(rc));

		sqlite3_close(*out);
		*out = NULL;
		return r;
	}
	sqlite3_busy_timeout(*out, 10000); /* Nix may be writing: wait for it */
	return 0;
}

/* -EAGAIN when the WAL cannot be shared read-only (then read as immutable). */
static int db_error(struct img_ctx *ctx, sqlite3 *db, const char *dbpath, const char *hint)
{
	int ec = sqlite3_errcode(db) & 0xff;

	if (ec == SQLITE_CANTOPEN || ec == SQLITE_READONLY)
		return img_set_error(ctx, -EAGAIN, "Nix database %s: %s", dbpath,
		                     sqlite3_errmsg(db));
	return img_set_error(ctx, -EINVAL, "Nix database %s: %s%s", dbpath, sqlite3_errmsg(db),
	                     hint);
}

void img_nixdb_closure_release(struct img_nixdb_closure *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->npaths; i++)
		free(c->paths[i]);
	free(c->paths);
	free(c->registration);
	memset(c, 0, sizeof(*c));
}

static int query(struct img_ctx *ctx, sqlite3 *db, const char *dbpath, const char *path,
                 struct img_nixdb_closure *out)
{
	sqlite3_stmt *cl = NULL, *rf = NULL;
	size_t cap = 0, len;
	FILE *reg = open_memstream(&out->registration, &len);
	int rc, r = 0;

	if (!reg)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if (sqlite3_prepare_v2(db, closure_sql, -1, &cl, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, refs_sql, -1, &rf, NULL) != SQLITE_OK) {
		r = db_error(ctx, db, dbpath, " (not a Nix database?)");
		goto out;
	}
	sqlite3_bind_text(cl, 1, path, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(cl)) == SQLITE_ROW) {
		sqlite3_int64 id = sqlite3_column_int64(cl, 0);
		const char *p = (const char *)sqlite3_column_text(cl, 1);
		const char *hash = (const char *)sqlite3_column_text(cl, 2);
		sqlite3_int64 nar = sqlite3_column_int64(cl, 3);
		char **refs = NULL;
		size_t nrefs = 0, rcap = 0;

		if (!p || !hash || !*hash) {
			r = img_set_error(ctx, -EINVAL, "Nix database %s: a valid path without %s",
			                  dbpath, p ? "a hash" : "a name");
			goto out;
		}
		if (out->npaths == cap) {
			char **np = realloc(out->paths, (cap = cap ? cap * 2 : 64) * sizeof(*np));

			if (!np)
				goto nomem;
			out->paths = np;
		}
		if (!(out->paths[out->npaths] = strdup(p)))
			goto nomem;
		out->npaths++;
		sqlite3_reset(rf);
		sqlite3_bind_int64(rf, 1, id);
		while ((rc = sqlite3_step(rf)) == SQLITE_ROW) {
			const char *ref = (const char *)sqlite3_column_text(rf, 0);

			if (nrefs == rcap) {
				char **nr =
				    realloc(refs, (rcap = rcap ? rcap * 2 : 16) * sizeof(*nr));

				if (!nr) {
					free(refs);
					goto nomem;
				}
				refs = nr;
			}
			refs[nrefs++] = ref ? strdup(ref) : NULL;
			if (!refs[nrefs - 1]) {
				for (size_t i = 0; i + 1 < nrefs; i++)
					free(refs[i]);
				free(refs);
				goto nomem;
			}
		}
		/* Each record as closureInfo writes it; the deriver stays empty. */
		if (rc == SQLITE_DONE)
			fprintf(reg, "%s\n%s\n%lld\n\n%zu\n", p, hash, (long long)nar, nrefs);
		for (size_t i = 0; i < nrefs; i++) {
			if (rc == SQLITE_DONE)
				fprintf(reg, "%s\n", refs[i]);
			free(refs[i]);
		}
		free(refs);
		if (rc != SQLITE_DONE)
			break;
	}
	if (rc != SQLITE_DONE) {
		r = db_error(ctx, db, dbpath, "");
		goto out;
	}
	if (!out->npaths) {
		r = img_set_error(ctx, -ENOENT,
		                  "%s is not a valid path in the Nix database %s (not built here, "
		                  "or garbage-collected?)",
		                  path, dbpath);
		goto out;
	}
	goto out;
nomem:
	r = img_set_error(ctx, -ENOMEM, "out of memory");
out:
	sqlite3_finalize(cl);
	sqlite3_finalize(rf);
	if (fclose(reg) != 0 && r == 0)
		r = img_set_error(ctx, -ENOMEM, "out of memory");
	out->registration_len = len;
	return r;
}

int img_nixdb_closure(struct img_ctx *ctx, const char *dbpath, const char *path,
                      struct img_nixdb_closure *out)
{
	sqlite3 *db = NULL;
	int r;

	memset(out, 0, sizeof(*out));
	if (access(dbpath, R_OK) < 0)
		return img_set_error(ctx, -errno, "Nix database %s: %s", dbpath, strerror(errno));
	r = open_db(ctx, dbpath, 0, &db);
	if (r == 0) {
		r = query(ctx, db, dbpath, path, out);
		sqlite3_close(db);
		db = NULL;
	}
	if (r == -EAGAIN) {
		/* Read-only WAL without a -shm we may use: read the file as it is. */
		img_nixdb_closure_release(out);
		img_ctx_clear_error(ctx);
		img_log(ctx, IMG_LOG_WARN,
		        "Nix database %s: cannot share its WAL read-only; reading the file as "
		        "immutable (paths registered since Nix's last checkpoint are not seen)",
		        dbpath);
		if ((r = open_db(ctx, dbpath, 1, &db)) < 0)
			return r;
		r = query(ctx, db, dbpath, path, out);
		sqlite3_close(db);
	}
	if (r < 0)
		img_nixdb_closure_release(out);
	return r;
}
