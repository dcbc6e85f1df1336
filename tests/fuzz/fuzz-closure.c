/* fuzz-closure.c -- the store-paths parser on arbitrary bytes: it must refuse
 * or accept without crashing, and what it accepts must hold its promises
 * (sorted, unique, every path a valid store path under the store dir). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"
#include <img/closure.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img_closure_opts o = { .store_dir = "/nix/store", .no_check_exists = 1 };
	struct img_closure *c = NULL;
	struct img_ctx *ctx;

	if (img_ctx_new(&ctx) < 0)
		return 0;
	if (img_closure_parse(ctx, "fuzz", (const char *)data, size, &o, &c) == 0) {
		if (!c->npaths)
			abort();
		for (size_t i = 0; i < c->npaths; i++) {
			const char *p = c->paths[i];

			if (strncmp(p, "/nix/store/", 11) ||
			    !img_store_name_valid(p + 11, strlen(p + 11)))
				abort();
			if (i && strcmp(c->paths[i - 1], p) >= 0)
				abort();
		}
		img_closure_free(c);
	} else if (c || !img_ctx_error(ctx)[0]) {
		abort(); /* a refusal leaves nothing and says why */
	}
	img_ctx_free(ctx);
	return 0;
}
