/*
 * fs.c -- the table of file system writers (fs.h). One row per format,
 * every one linked in: the recipes reach the writers only through here, so
 * a weak reference would leave a static link without them.
 */
#include "private.h"
#include <img/fs.h>

extern const struct img_fs_ops img_fs_ext4;
extern const struct img_fs_ops img_fs_erofs;
extern const struct img_fs_ops img_fs_fat32;

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
