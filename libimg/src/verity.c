/*
 * verity.c -- a dm-verity hash tree in veritysetup's format (verity.h,
 * ondisk/verity.h).
 *
 * The levels lie top first, level 0 last, so the tree can go out in file
 * order only once every data block's digest is known. So level 0 (one
 * 32-byte digest per 4096-byte data block: 1/128 of the data) is collected
 * in memory, the levels above it (1/128 of that each) are computed from it
 * at the end, and superblock and tree are then written front to back: the
 * output stays in file order and is hashed as it is written.
 *
 * Level 0 comes from a tap on the device (img_dev_set_tap): the data's
 * writes pass by in order on a device written in file order, the bytes of
 * each data block are hashed as they are written (file data copied from a
 * descriptor go through memory for it), and a gap nothing was written to is
 * zero blocks of a new device, whose digest is one constant. Level 0 is kept
 * in hash blocks of 128 digests, allocated only for a block that holds a
 * digest of a non-zero data block: a sparse range costs no memory. A write
 * behind the tap's frontier (out of order, or over bytes written before)
 * leaves the tap's digests unusable; then, as without a tap, the data are
 * read back from the device once and the tree written as it is built
 * (read_back below). Either way the same bytes in the same places. SHA-256
 * is OpenSSL's.
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

/* Level 0 and what is known of the data so far (verity.h). */
struct img_verity_tap {
	struct img_ctx *ctx;
	struct img_dev *dev; /* tapped (a reference), or NULL once detached */
	uint64_t data_offset, data_blocks;
	uint8_t salt[32];
	EVP_MD_CTX *md;
	uint8_t **leaf; /* level 0 hash blocks; NULL: only zero data blocks' digests */
	uint64_t nleaf;
	uint8_t zero[DIGEST]; /* the digest of a zero data block */
	uint8_t *blk;         /* the data block being filled (the rest zeros) */
	uint64_t front;       /* bytes of the data range seen, from its start */
	int lost;             /* the digests cannot be used (why: lost_at, err) */
	uint64_t lost_at;     /* device offset of the write out of order */
	int err;              /* or the failure that lost them */
};

/* One block's salted digest, as every level of the tree takes it. -EIO: OpenSSL failed. */
static int salted_digest(EVP_MD_CTX *md, const uint8_t salt[32], const void *block,
                         uint8_t out[DIGEST])
{
	unsigned n = 0;

	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(md, salt, 32) != 1 ||
	    EVP_DigestUpdate(md, block, IMG_VERITY_BLOCK) != 1 ||
	    EVP_DigestFinal_ex(md, out, &n) != 1 || n != DIGEST)
		return -EIO;
	return 0;
}

static int digest(struct img_verity_tap *t, const void *block, uint8_t out[DIGEST])
{
	return salted_digest(t->md, t->salt, block, out);
}

/* Slots of level 0 hash block @j that stand for data blocks (the last block's rest is zeros). */
static unsigned leaf_slots(const struct img_verity_tap *t, uint64_t j)
{
	return (unsigned)IMG_MIN((uint64_t)PER_BLOCK, t->data_blocks - j * PER_BLOCK);
}

/* Level 0 hash block @j of nothing but zero data blocks, into @out. */
static void zero_leaf(const struct img_verity_tap *t, uint64_t j, uint8_t *out)
{
	unsigned n = leaf_slots(t, j);

	for (unsigned i = 0; i < n; i++)
		memcpy(out + i * DIGEST, t->zero, DIGEST);
	memset(out + n * DIGEST, 0, (PER_BLOCK - n) * DIGEST);
}

/* Data block @b (not all zeros): its digest into level 0. */
static int leaf_put(struct img_verity_tap *t, uint64_t b, const uint8_t *data)
{
	uint64_t j = b / PER_BLOCK;

	if (!t->leaf[j]) {
		t->leaf[j] = malloc(IMG_VERITY_BLOCK);
		if (!t->leaf[j])
			return -ENOMEM;
		zero_leaf(t, j, t->leaf[j]);
	}
	return digest(t, data, t->leaf[j] + (b % PER_BLOCK) * DIGEST);
}

/*
 * The next @n bytes of the data range, from t->front on (@buf NULL: zeros).
 * Whole zero blocks keep the digest their slot was given; the block being
 * filled is hashed once its last byte has come (it was zeroed before).
 */
static int consume(struct img_verity_tap *t, const uint8_t *buf, uint64_t n)
{
	int r = 0;

	while (n && r >= 0) {
		uint64_t in = t->front % IMG_VERITY_BLOCK, k;

		if (in == 0 && n >= IMG_VERITY_BLOCK) {
			k = buf ? IMG_VERITY_BLOCK : n - n % IMG_VERITY_BLOCK;
			if (buf && !img_all_zero(buf, IMG_VERITY_BLOCK))
				r = leaf_put(t, t->front / IMG_VERITY_BLOCK, buf);
		} else {
			k = IMG_MIN(n, IMG_VERITY_BLOCK - in);
			if (buf)
				memcpy(t->blk + in, buf, (size_t)k);
			if (in + k == IMG_VERITY_BLOCK) {
				if (!img_all_zero(t->blk, IMG_VERITY_BLOCK))
					r = leaf_put(t, t->front / IMG_VERITY_BLOCK, t->blk);
				memset(t->blk, 0, IMG_VERITY_BLOCK);
			}
		}
		if (buf)
			buf += k;
		t->front += k;
		n -= k;
	}
	return r;
}

/* The device's tap: one write into the data range, as it is made. */
static void tap_write(void *user, const void *buf, uint64_t len, uint64_t off)
{
	struct img_verity_tap *t = user;
	uint64_t at = off - t->data_offset;
	int r;

	if (t->lost)
		return;
	if (at < t->front) {
		t->lost = 1;
		t->lost_at = off;
		return;
	}
	r = consume(t, NULL, at - t->front);
	if (r >= 0)
		r = consume(t, buf, len);
	if (r < 0) {
		t->lost = 1;
		t->err = r;
	}
}

static void tap_detach(struct img_verity_tap *t)
{
	if (!t->dev)
		return;
	img_dev_set_tap(t->dev, 0, 0, NULL, NULL);
	img_dev_unref(t->dev);
	t->dev = NULL;
}

void img_verity_tap_free(struct img_verity_tap *t)
{
	if (!t)
		return;
	tap_detach(t);
	if (t->leaf)
		for (uint64_t j = 0; j < t->nleaf; j++)
			free(t->leaf[j]);
	free(t->leaf);
	free(t->blk);
	EVP_MD_CTX_free(t->md);
	free(t);
}

/* A tap's state without a device: level 0 empty, the zero block's digest. */
static int tap_alloc(struct img_ctx *ctx, const struct img_verity *v, struct img_verity_tap **out)
{
	struct img_verity_tap *t = calloc(1, sizeof(*t));
	uint8_t *z = NULL;

	*out = NULL;
	if (!t)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	t->ctx = ctx;
	t->data_offset = v->data_offset;
	t->data_blocks = v->data_blocks;
	memcpy(t->salt, v->salt, sizeof(t->salt));
	t->nleaf = IMG_DIV_ROUND_UP(v->data_blocks, PER_BLOCK);
	t->md = EVP_MD_CTX_new();
	t->leaf = calloc((size_t)IMG_MAX(t->nleaf, 1), sizeof(*t->leaf));
	t->blk = calloc(1, IMG_VERITY_BLOCK);
	z = calloc(1, IMG_VERITY_BLOCK);
	if (!t->md || !t->leaf || !t->blk || !z) {
		free(z);
		img_verity_tap_free(t);
		return img_set_error(ctx, -ENOMEM, "out of memory");
	}
	if (digest(t, z, t->zero) < 0) {
		free(z);
		img_verity_tap_free(t);
		return img_set_error(ctx, -EIO, "verity: SHA-256 failed");
	}
	free(z);
	*out = t;
	return 0;
}

int img_verity_tap_new(struct img_ctx *ctx, struct img_dev *dev, const struct img_verity *v,
                       struct img_verity_tap **out)
{
	int r = tap_alloc(ctx, v, out);

	if (r < 0)
		return r;
	(*out)->dev = img_dev_ref(dev);
	img_dev_set_tap(dev, v->data_offset, v->data_blocks * IMG_VERITY_BLOCK, tap_write, *out);
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

/*
 * Without a usable tap: the data read back from the device (4 MiB at a
 * time), the tree built level by level as they go by, each level holding
 * the hash block it is filling; a full block is written to its place
 * (known from the sizes alone) and its digest goes up one level, the
 * superblock last. Memory is one block per level; the writes come back to
 * earlier blocks, in a fixed order (an output that allocates on first
 * touch, compressed qcow2 or streamOptimized VMDK, gets the same bytes as
 * ever).
 */
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

static int tree_digest(struct tree *t, const void *buf, uint8_t out[DIGEST])
{
	if (salted_digest(t->md, t->v->salt, buf, out) < 0)
		return img_set_error(t->ctx, -EIO, "verity: SHA-256 failed");
	return 0;
}

static int tree_push(struct tree *t, unsigned l, const uint8_t d[DIGEST]);

/* Write level @l's current block, zero padded, and pass its digest up. */
static int tree_flush(struct tree *t, unsigned l)
{
	uint8_t d[DIGEST];
	int r;

	memset(t->blk[l] + t->fill[l] * DIGEST, 0, (PER_BLOCK - t->fill[l]) * DIGEST);
	r = img_dev_pwrite(t->dev, t->blk[l], IMG_VERITY_BLOCK,
	                   t->start[l] + t->next[l] * IMG_VERITY_BLOCK);
	if (r >= 0)
		r = tree_digest(t, t->blk[l], d);
	if (r < 0)
		return r;
	t->next[l]++;
	t->fill[l] = 0;
	return tree_push(t, l + 1, d);
}

static int tree_push(struct tree *t, unsigned l, const uint8_t d[DIGEST])
{
	if (l == t->levels) {
		memcpy(t->v->root, d, DIGEST);
		return 0;
	}
	memcpy(t->blk[l] + t->fill[l] * DIGEST, d, DIGEST);
	if (++t->fill[l] == PER_BLOCK)
		return tree_flush(t, l);
	return 0;
}

static int read_back(struct img_ctx *ctx, struct img_dev *dev, struct img_verity *v)
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
			r = tree_digest(&t, buf + o, d);
			if (r >= 0)
				r = tree_push(&t, 0, d);
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
			r = tree_flush(&t, i);
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

/* Level 0 hash block @j as it goes on disk (the tap's, or one of zero blocks). */
static const uint8_t *leaf_block(const struct img_verity_tap *t, uint64_t j, uint8_t *scratch)
{
	if (t->leaf[j])
		return t->leaf[j];
	zero_leaf(t, j, scratch);
	return scratch;
}

/*
 * The levels above 0 (up[1] .. up[levels-1], each one array of whole hash
 * blocks) and the root, from level 0; then superblock, levels top first and
 * level 0 (whole MiB at a time) written front to back from v->hash_offset.
 */
static int write_tree(struct img_verity_tap *t, struct img_dev *dev, struct img_verity *v)
{
	uint64_t size[MAX_LEVELS], pos = v->hash_offset;
	uint8_t *up[MAX_LEVELS] = { 0 }, *buf = malloc(READ_CHUNK);
	unsigned levels = levels_for(v->data_blocks, size);
	int r = buf ? 0 : -ENOMEM;

	for (unsigned i = 1; r >= 0 && i < levels; i++)
		if (!(up[i] = calloc((size_t)size[i], IMG_VERITY_BLOCK)))
			r = -ENOMEM;
	if (r < 0) {
		r = img_set_error(t->ctx, r, "out of memory");
		goto out;
	}
	if (levels == 0) {
		/* One data block: its digest is the root (no leaf block: a zero block) */
		memcpy(v->root, t->leaf[0] ? t->leaf[0] : t->zero, DIGEST);
	} else {
		/* Level 0's digests into level 1 (or the root), then upwards. */
		uint8_t *into = levels > 1 ? up[1] : v->root;

		for (uint64_t j = 0; r >= 0 && j < size[0]; j++)
			r = digest(t, leaf_block(t, j, buf), into + j * DIGEST);
		for (unsigned i = 1; r >= 0 && i < levels; i++) {
			into = i + 1 < levels ? up[i + 1] : v->root;
			for (uint64_t j = 0; r >= 0 && j < size[i]; j++)
				r = digest(t, up[i] + j * IMG_VERITY_BLOCK, into + j * DIGEST);
		}
		if (r < 0) {
			r = img_set_error(t->ctx, -EIO, "verity: SHA-256 failed");
			goto out;
		}
	}
	put_superblock(v, buf);
	r = img_dev_pwrite(dev, buf, IMG_VERITY_BLOCK, pos);
	pos += IMG_VERITY_BLOCK;
	for (unsigned i = levels; r >= 0 && i-- > 1;) {
		r = img_dev_write_data(dev, up[i], (size_t)(size[i] * IMG_VERITY_BLOCK), pos);
		pos += size[i] * IMG_VERITY_BLOCK;
	}
	for (uint64_t j = 0; r >= 0 && levels && j < size[0];) {
		size_t n = 0;

		for (; j < size[0] && n < READ_CHUNK; j++, n += IMG_VERITY_BLOCK) {
			if (t->leaf[j])
				memcpy(buf + n, t->leaf[j], IMG_VERITY_BLOCK);
			else
				zero_leaf(t, j, buf + n);
		}
		r = img_dev_write_data(dev, buf, n, pos);
		pos += n;
	}
	if (r >= 0 && pos != v->hash_offset + v->hash_size)
		r = img_set_error(t->ctx, -EIO, "verity: the tree ends at %llu, planned %llu",
		                  (unsigned long long)pos,
		                  (unsigned long long)(v->hash_offset + v->hash_size));
out:
	for (unsigned i = 1; i < levels; i++)
		free(up[i]);
	free(buf);
	return r;
}

int img_verity_write(struct img_ctx *ctx, struct img_dev *dev, struct img_verity *v,
                     struct img_verity_tap *tap)
{
	int r;

	v->hashed_as_written = false;
	if (img_dev_size(dev) < v->hash_offset + v->hash_size ||
	    img_dev_size(dev) < v->data_offset + v->data_blocks * IMG_VERITY_BLOCK)
		return img_set_error(ctx, -EINVAL, "verity: the device is too small for the tree");
	if (!tap) {
		img_log(ctx, IMG_LOG_INFO, "verity: reading the data back");
		return read_back(ctx, dev, v);
	}
	tap_detach(tap); /* the tree's own writes are not data */
	if (tap->data_offset != v->data_offset || tap->data_blocks != v->data_blocks ||
	    memcmp(tap->salt, v->salt, sizeof(v->salt)))
		return img_set_error(ctx, -EINVAL, "verity: the tap was set up for another tree");
	if (!tap->lost && tap->front % IMG_VERITY_BLOCK) {
		/* the rest of the last block written to: zeros, not written yet */
		r = consume(tap, NULL, IMG_VERITY_BLOCK - tap->front % IMG_VERITY_BLOCK);
		if (r < 0) {
			tap->lost = 1;
			tap->err = r;
		}
	}
	if (tap->lost && tap->err) {
		img_log(ctx, IMG_LOG_INFO, "verity: reading the data back (%s while hashing them)",
		        strerror(-tap->err));
		return read_back(ctx, dev, v);
	}
	if (tap->lost) {
		img_log(ctx, IMG_LOG_INFO,
		        "verity: reading the data back (a write at %llu came out of order)",
		        (unsigned long long)tap->lost_at);
		return read_back(ctx, dev, v);
	}
	img_log(ctx, IMG_LOG_INFO, "verity: the data were hashed as they were written");
	r = write_tree(tap, dev, v);
	if (r >= 0)
		v->hashed_as_written = true;
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
