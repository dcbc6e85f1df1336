/*
 * fs.c -- the table of file system writers (fs.h). One row per format. ext4
 * is always there; erofs and fat32 are weak references, so a build that
 * leaves their writer out still links (the row is then NULL and skipped).
 */
#include "private.h"
#include <img/fs.h>

extern const struct img_fs_ops img_fs_ext4;
extern const struct img_fs_ops img_fs_erofs __attribute__((weak));
extern const struct img_fs_ops img_fs_fat32 __attribute__((weak));

static const struct img_fs_ops *const fs_table[] = {
	&img_fs_ext4,
	&img_fs_erofs,
	&img_fs_fat32,
};

const struct img_fs_ops *img_fs_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < IMG_ARRAY_SIZE(fs_table); i++)
		if (fs_table[i] && fs_table[i]->name && !strcmp(fs_table[i]->name, name))
			return fs_table[i];
	return NULL;
}
