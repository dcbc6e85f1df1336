/*
 * verity.c -- a dm-verity hash tree in veritysetup's format (verity.h,
 * ondisk/verity.h).
 *
 * The tree is built in one pass over the data: each level keeps the hash
 * block it is filling; a full block is written to its place (known from the
 * sizes alone) and its digest goes up one level. So memory is one block per
 * level, whatever the data size, and the order of writes is fixed: the same
 * data give the same bytes.
 *
 * The data are read back from the device after the file system is written
 * (not hashed as written: the writers copy file data in-kernel with
 * copy_file_range, which user space never sees). Reads come from the page
 * cache or the output file; SHA-256 is OpenSSL's.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

#include "ondisk/verity.h"
#include "verity.h"
#include <img/repro.h>

#define DIGEST     32u
#define PER_BLOCK  (IMG_VERITY_BLOCK / DIGEST) /* 128 digests per hash block */
#define MAX_LEVELS 10                          /* 128^10 blocks: far past 2^64 bytes */
#define READ_CHUNK (4u << 20)

/* Levels above the data: the smallest L with PER_BLOCK^L >= data_blocks. */
static unsigned levels_for(uint64_t data_blocks, uint64_t size[MAX_LEVELS])
{
	unsigned l = 0;
	uint64_t n = data_blocks;

	while (n > 1) {
		n = IMG_DIV_ROUND_UP(n, PER_BLOCK);
		if (size)
			size[l] = n;
		l++;
	}
	return l;
}

uint64_t img_verity_tree_blocks(uint64_t data_blocks)
{
	uint64_t size[MAX_LEVELS], total = 0;
	unsigned l = levels_for(data_blocks, size);

	for (unsigned i = 0; i < l; i++)
		total += size[i];
	return total;
}

int img_verity_init(struct img_ctx *ctx, struct img_verity *v, uint64_t data_off,
                    uint64_t data_size, uint64_t hash_off)
{
	uint8_t salt[32];

	memset(v, 0, sizeof(*v));
	if (!data_size || data_off % IMG_VERITY_BLOCK || data_size % IMG_VERITY_BLOCK ||
	    hash_off % IMG_VERITY_BLOCK)
		return img_set_error(ctx, -EINVAL,
		                     "verity: data offset, size and hash offset must be "
		                     "multiples of %u bytes",
		                     IMG_VERITY_BLOCK);
	v->data_offset = data_off;
	v->data_blocks = data_size / IMG_VERITY_BLOCK;
	v->hash_offset = hash_off;
	v->hash_size = (1 + img_verity_tree_blocks(v->data_blocks)) * IMG_VERITY_BLOCK;
	if (hash_off < data_off + data_size && data_off < hash_off + v->hash_size)
		return img_set_error(ctx, -EINVAL, "verity: the hash area overlaps the data");
	img_repro_digest(ctx, "verity-salt", salt);
	memcpy(v->salt, salt, sizeof(v->salt));
	img_repro_uuid(ctx, "verity-uuid", v->uuid);
	return 0;
}

struct tree {
	struct img_ctx *ctx;
	struct img_dev *dev;
	struct img_verity *v;
	EVP_MD_CTX *md;
	unsigned levels;
	uint64_t start[MAX_LEVELS]; /* byte offset of each level on the device */
	uint64_t next[MAX_LEVELS];  /* blocks of the level written so far */
	unsigned fill[MAX_LEVELS];  /* digests in the block being filled */
	uint8_t *blk[MAX_LEVELS];
};

static int digest(struct tree *t, const void *buf, uint8_t out[DIGEST])
{
	unsigned n = 0;

	if (EVP_DigestInit_ex(t->md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(t->md, t->v->salt, sizeof(t->v->salt)) != 1 ||
	    EVP_DigestUpdate(t->md, buf, IMG_VERITY_BLOCK) != 1 ||
	    EVP_DigestFinal_ex(t->md, out, &n) != 1 || n != DIGEST)
		return img_set_error(t->ctx, -EIO, "verity: SHA-256 failed");
	return 0;
}

static int push(struct tree *t, unsigned l, const uint8_t d[DIGEST]);

/* Write level @l's current block, zero padded, and pass its digest up. */
static int flush(struct tree *t, unsigned l)
{
	uint8_t d[DIGEST];
	int r;

	memset(t->blk[l] + t->fill[l] * DIGEST, 0, (PER_BLOCK - t->fill[l]) * DIGEST);
	r = img_dev_pwrite(t->dev, t->blk[l], IMG_VERITY_BLOCK,
	                   t->start[l] + t->next[l] * IMG_VERITY_BLOCK);
	if (r >= 0)
		r = digest(t, t->blk[l], d);
	if (r < 0)
		return r;
	t->next[l]++;
	t->fill[l] = 0;
	return push(t, l + 1, d);
}

static int push(struct tree *t, unsigned l, const uint8_t d[DIGEST])
{
	if (l == t->levels) {
		memcpy(t->v->root, d, DIGEST);
		return 0;
	}
	memcpy(t->blk[l] + t->fill[l] * DIGEST, d, DIGEST);
	if (++t->fill[l] == PER_BLOCK)
		return flush(t, l);
	return 0;
}

static void put_superblock(const struct img_verity *v, uint8_t *sb)
{
	memset(sb, 0, IMG_VERITY_BLOCK);
	memcpy(sb + VERITY_SB_SIGNATURE, VERITY_SIGNATURE, 8);
	img_put_le32(sb + VERITY_SB_VERSION, VERITY_VERSION);
	img_put_le32(sb + VERITY_SB_HASH_TYPE, VERITY_HASH_TYPE);
	memcpy(sb + VERITY_SB_UUID, v->uuid, 16);
	memcpy(sb + VERITY_SB_ALGORITHM, IMG_VERITY_ALGORITHM, strlen(IMG_VERITY_ALGORITHM));
	img_put_le32(sb + VERITY_SB_DATA_BLOCK_SIZE, IMG_VERITY_BLOCK);
	img_put_le32(sb + VERITY_SB_HASH_BLOCK_SIZE, IMG_VERITY_BLOCK);
	img_put_le64(sb + VERITY_SB_DATA_BLOCKS, v->data_blocks);
	img_put_le16(sb + VERITY_SB_SALT_SIZE, sizeof(v->salt));
	memcpy(sb + VERITY_SB_SALT, v->salt, sizeof(v->salt));
}

int img_verity_write(struct img_ctx *ctx, struct img_dev *dev, struct img_verity *v)
{
	struct tree t = { .ctx = ctx, .dev = dev, .v = v };
	uint64_t size[MAX_LEVELS], pos, left;
	uint8_t *buf = NULL, d[DIGEST];
	int r = 0;

	if (img_dev_size(dev) < v->hash_offset + v->hash_size ||
	    img_dev_size(dev) < v->data_offset + v->data_blocks * IMG_VERITY_BLOCK)
		return img_set_error(ctx, -EINVAL, "verity: the device is too small for the tree");
	t.levels = levels_for(v->data_blocks, size);
	/* Top level first, right after the superblock block. */
	pos = v->hash_offset + IMG_VERITY_BLOCK;
	for (unsigned i = t.levels; i-- > 0;) {
		t.start[i] = pos;
		pos += size[i] * IMG_VERITY_BLOCK;
	}
	t.md = EVP_MD_CTX_new();
	buf = malloc(READ_CHUNK);
	if (!t.md || !buf)
		r = img_set_error(ctx, -ENOMEM, "out of memory");
	for (unsigned i = 0; r >= 0 && i < t.levels; i++) {
		t.blk[i] = malloc(IMG_VERITY_BLOCK);
		if (!t.blk[i])
			r = img_set_error(ctx, -ENOMEM, "out of memory");
	}
	img_progress_phase(ctx, "computing the dm-verity hash tree",
	                   v->data_blocks * IMG_VERITY_BLOCK, 0);
	pos = v->data_offset;
	left = v->data_blocks * IMG_VERITY_BLOCK;
	while (r >= 0 && left) {
		size_t n = (size_t)IMG_MIN(left, (uint64_t)READ_CHUNK);

		r = img_dev_pread(dev, buf, n, pos);
		for (size_t o = 0; r >= 0 && o < n; o += IMG_VERITY_BLOCK) {
			r = digest(&t, buf + o, d);
			if (r >= 0)
				r = push(&t, 0, d);
		}
		if (r >= 0)
			r = img_check_cancel(ctx);
		img_progress_add(ctx, n, 0);
		pos += n;
		left -= n;
	}
	/* Partly filled blocks, bottom up: each flush may fill the next level. */
	for (unsigned i = 0; r >= 0 && i < t.levels; i++)
		if (t.fill[i])
			r = flush(&t, i);
	for (unsigned i = 0; r >= 0 && i < t.levels; i++)
		if (t.next[i] != size[i])
			r = img_set_error(
			    ctx, -EIO, "verity: level %u has %llu blocks, planned %llu", i,
			    (unsigned long long)t.next[i], (unsigned long long)size[i]);
	if (r >= 0) {
		put_superblock(v, buf);
		r = img_dev_pwrite(dev, buf, IMG_VERITY_BLOCK, v->hash_offset);
	}
	for (unsigned i = 0; i < t.levels; i++)
		free(t.blk[i]);
	free(buf);
	EVP_MD_CTX_free(t.md);
	return r;
}

char *img_verity_table(const struct img_verity *v, const char *devname)
{
	char root[65], salt[65], *s = NULL;

	img_hex(v->root, sizeof(v->root), root);
	img_hex(v->salt, sizeof(v->salt), salt);
	if (img_asprintf(&s, "1 %s %s %u %u %llu %llu %s %s %s", devname, devname, IMG_VERITY_BLOCK,
	                 IMG_VERITY_BLOCK, (unsigned long long)v->data_blocks,
	                 (unsigned long long)(v->hash_offset / IMG_VERITY_BLOCK + 1),
	                 IMG_VERITY_ALGORITHM, root, salt) < 0)
		return NULL;
	return s;
}
