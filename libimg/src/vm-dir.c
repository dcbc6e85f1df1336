/*
 * vm-dir.c -- the directories vmlaunch keeps a VM's state in, and the only
 * ways it touches names in them (docs/vm-state.md).
 *
 * Each directory is opened once (O_DIRECTORY, the state dir also
 * O_NOFOLLOW) and checked: the state dir and the TPM dir must be the
 * caller's and writable by nobody else (as ssh checks ~/.ssh); a directory
 * that only holds a NIX_* file may be shared if it is sticky, like /tmp;
 * no directory above any of them may be writable by another user (they
 * could swap the directory QEMU opens by name). Then every file is reached
 * relative to that fd with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW: a symbolic
 * link planted there is never followed, nothing outside is reached, and a
 * name is reused or removed only when it is a regular file (or socket) of
 * the caller. Directories that exist are never chmodded.
 *
 * The lock is flock(2) on STATE/vmlaunch.lock, which holds the pid of the
 * vmlaunch that took it; QEMU and swtpm inherit it, so it lasts as long as
 * any of them runs.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm-private.h"

#define LOCK_NAME "vmlaunch.lock"

const char *vm_file_kind(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFREG:
		return "regular file";
	case S_IFDIR:
		return "directory";
	case S_IFLNK:
		return "symbolic link";
	case S_IFBLK:
		return "block device node";
	case S_IFCHR:
		return "character device node";
	case S_IFIFO:
		return "FIFO";
	case S_IFSOCK:
		return "socket";
	default:
		return "special file";
	}
}

void vm_dir_init(struct vm_dir *d)
{
	d->fd = -1;
	d->path = NULL;
}

void vm_dir_close(struct vm_dir *d)
{
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
}

char *vm_dir_name(struct img_vm *vm, const struct vm_dir *d, const char *name)
{
	return vm_printf(vm, "%s/%s", d->path, name);
}

/*
 * Make the missing directories of @path, each 0700. A directory that
 * exists is never changed (TMPDIR, the user's state dir, the directory of
 * NIX_DISK_IMAGE: not ours to chmod). *@created: the last one was made here.
 */
static int mkdir_p(struct img_ctx *ctx, const char *path, int *created)
{
	char buf[PATH_MAX];

	*created = 0;
	if (strlen(path) >= sizeof(buf))
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", path);
	strcpy(buf, path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return img_set_error(ctx, -errno, "%s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0700) == 0)
		*created = 1;
	else if (errno != EEXIST)
		return img_set_error(ctx, -errno, "%s: %s", buf, strerror(errno));
	return 0;
}

/*
 * Every directory above @path (the nearest one that exists, resolved, and
 * all above it): owned by root or the caller, and if others may write into
 * it, sticky. Otherwise someone else could rename the state away and put
 * their own in its place between our checks and QEMU opening the files by
 * name. Checked before anything is made.
 */
static int check_ancestors(struct img_ctx *ctx, const char *path, const char *what)
{
	char buf[PATH_MAX], real[PATH_MAX], *slash;
	size_t n = strlen(path);
	struct stat st;

	if (n >= sizeof(buf))
		return img_set_error(ctx, -ENAMETOOLONG, "%s: path too long", path);
	memcpy(buf, path, n + 1);
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	do {
		slash = strrchr(buf, '/');
		if (!slash)
			strcpy(buf, ".");
		else if (slash == buf)
			buf[1] = '\0';
		else
			*slash = '\0';
	} while (slash && slash != buf && lstat(buf, &st) < 0);
	if (!realpath(buf, real))
		return img_set_error(ctx, -errno, "%s %s: %s: %s", what, path, buf,
		                     strerror(errno));
	for (;;) {
		if (stat(real, &st) < 0)
			return img_set_error(ctx, -errno, "%s: %s", real, strerror(errno));
		if (st.st_uid != 0 && st.st_uid != geteuid())
			return img_set_error(ctx, -EPERM,
			                     "%s %s: the directory %s above it is owned by uid %u, "
			                     "who could replace it; refusing to use it",
			                     what, path, real, (unsigned)st.st_uid);
		if ((st.st_mode & 002) && !(st.st_mode & S_ISVTX))
			return img_set_error(ctx, -EPERM,
			                     "%s %s: the directory %s above it is writable by "
			                     "everyone and not sticky (mode %04o), so anyone could "
			                     "replace it; refusing to use it",
			                     what, path, real, (unsigned)(st.st_mode & 07777));
		if (!strcmp(real, "/"))
			return 0;
		slash = strrchr(real, '/');
		if (slash == real)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
}

static int check_dir(struct img_ctx *ctx, const struct stat *st, const char *path, const char *what,
                     enum vm_dir_kind kind)
{
	unsigned mode = st->st_mode & 07777;

	if (kind == VM_DIR_HOLDER) {
		if (st->st_uid != 0 && st->st_uid != geteuid())
			return img_set_error(ctx, -EPERM,
			                     "%s: the directory %s is owned by uid %u, who could "
			                     "replace the file; refusing to use it",
			                     what, path, (unsigned)st->st_uid);
		if ((mode & 002) && !(mode & S_ISVTX))
			return img_set_error(ctx, -EPERM,
			                     "%s: the directory %s is writable by everyone and not "
			                     "sticky (mode %04o); refusing to use it",
			                     what, path, mode);
		return 0;
	}
	if (st->st_uid != geteuid())
		return img_set_error(ctx, -EPERM,
		                     "%s %s is owned by uid %u, not by you (uid %u); refusing to "
		                     "use it",
		                     what, path, (unsigned)st->st_uid, (unsigned)geteuid());
	if (mode & 022)
		return img_set_error(ctx, -EPERM,
		                     "%s %s is writable by %s (mode %04o); refusing to use it "
		                     "(chmod go-w it, or give another directory)",
		                     what, path, mode & 002 ? "others" : "its group", mode);
	if (mode & 077)
		img_log(ctx, IMG_LOG_WARN,
		        "%s %s is readable by others (mode %04o); the VM's disk and console log "
		        "in it are too",
		        what, path, mode);
	return 0;
}

int vm_dir_open(struct img_ctx *ctx, const char *path, const char *what, enum vm_dir_kind kind,
                int *created, struct vm_dir *d)
{
	int made = 0, r, flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
	struct stat st;

	vm_dir_init(d);
	d->path = path;
	if ((r = check_ancestors(ctx, path, what)) < 0)
		return r;
	if (created) {
		*created = 0;
		if ((r = mkdir_p(ctx, path, &made)) < 0)
			return r;
	}
	/* The state dir itself must not be a symlink; a NIX_* file's directory
	 * may be reached through one (it is checked where it leads). */
	if (kind == VM_DIR_OWN)
		flags |= O_NOFOLLOW;
	d->fd = open(path, flags);
	if (d->fd < 0) {
		int e = errno;

		if (kind == VM_DIR_OWN && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			return img_set_error(ctx, -ELOOP,
			                     "%s %s is a symbolic link; vmlaunch does not follow "
			                     "it (give the directory itself)",
			                     what, path);
		return img_set_error(ctx, -e, "%s %s: %s", what, path, strerror(e));
	}
	if (fstat(d->fd, &st) < 0) {
		r = img_set_error(ctx, -errno, "%s %s: %s", what, path, strerror(errno));
		goto fail;
	}
	if (!made && (r = check_dir(ctx, &st, path, what, kind)) < 0)
		goto fail;
	if (created)
		*created = made;
	return 0;
fail:
	vm_dir_close(d);
	return r;
}

int vm_dir_check(struct img_ctx *ctx, const char *path, const char *what, enum vm_dir_kind kind)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT
		           ? 0
		           : img_set_error(ctx, -errno, "%s %s: %s", what, path, strerror(errno));
	if (kind == VM_DIR_OWN && S_ISLNK(st.st_mode))
		return img_set_error(ctx, -ELOOP,
		                     "%s %s is a symbolic link; vmlaunch does not follow it", what,
		                     path);
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return img_set_error(ctx, -ENOTDIR, "%s %s: not a directory", what, path);
	if (check_dir(ctx, &st, path, what, kind) < 0)
		return -EPERM;
	return check_ancestors(ctx, path, what);
}

int vm_dir_subdir(struct img_ctx *ctx, const struct vm_dir *d, const char *name, mode_t mode,
                  const char *path, struct vm_dir *sub)
{
	struct stat st;
	int made = 0;

	vm_dir_init(sub);
	sub->path = path;
	if (mkdirat(d->fd, name, 0700) == 0)
		made = 1;
	else if (errno != EEXIST)
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	sub->fd = openat(d->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub->fd < 0) {
		if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return img_set_error(ctx, -ENOTDIR,
			                     "%s is a %s, not a directory vmlaunch made; refusing "
			                     "to use it",
			                     path, vm_file_kind(st.st_mode));
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	}
	if (fstat(sub->fd, &st) < 0 || st.st_uid != geteuid()) {
		vm_dir_close(sub);
		return img_set_error(ctx, -EPERM,
		                     "%s is owned by uid %u, not by you; refusing to "
		                     "use it",
		                     path, (unsigned)st.st_uid);
	}
	/* Past the umask, on what was made just now (the guest sees the mode). */
	if (made && mode != 0700 && fchmod(sub->fd, mode) < 0) {
		vm_dir_close(sub);
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	}
	return 0;
}

/* ---- the lock --------------------------------------------------------------------- */

static long lock_holder(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

static int busy(struct img_ctx *ctx, const struct vm_dir *d, int fd)
{
	long pid = lock_holder(fd);

	if (pid > 0)
		return img_set_error(ctx, -EBUSY,
		                     "state directory %s is in use by vmlaunch (pid %ld) or the VM "
		                     "it started; stop that VM first, or give another "
		                     "--state-dir",
		                     d->path, pid);
	return img_set_error(ctx, -EBUSY,
	                     "state directory %s is in use by a running vmlaunch or its VM; stop "
	                     "that VM first, or give another --state-dir",
	                     d->path);
}

int vm_dir_lock(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, int *out)
{
	char *path = vm_dir_name(vm, d, LOCK_NAME), buf[32];
	struct stat st;
	int fd, n;

	*out = -1;
	fd = openat(d->fd, LOCK_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (errno == ELOOP)
			return img_set_error(
			    ctx, -ELOOP,
			    "%s is a symbolic link, not a regular file vmlaunch made; "
			    "refusing to use it",
			    path);
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		close(fd);
		return img_set_error(ctx, -EPERM,
		                     "%s: not a regular file of yours (a %s of uid %u); refusing "
		                     "to use it",
		                     path, vm_file_kind(st.st_mode), (unsigned)st.st_uid);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int r = errno == EWOULDBLOCK
		            ? busy(ctx, d, fd)
		            : img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));

		close(fd);
		return r;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
		int e = errno ? errno : EIO;

		close(fd);
		return img_set_error(ctx, -e, "%s: %s", path, strerror(e));
	}
	*out = fd;
	return 0;
}

int vm_dir_probe_lock(struct img_ctx *ctx, const struct vm_dir *d)
{
	int fd = openat(d->fd, LOCK_NAME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC), r = 0;
	struct stat st;

	if (fd < 0)
		return 0;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) < 0 &&
	    errno == EWOULDBLOCK)
		r = busy(ctx, d, fd);
	close(fd); /* drops the lock if we just took it */
	return r;
}

/* ---- files ------------------------------------------------------------------------ */

int vm_dir_lstat(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, const char *name,
                 struct stat *st)
{
	if (fstatat(d->fd, name, st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	if (errno == ENOENT)
		return 0;
	return img_set_error(ctx, -errno, "%s: %s", vm_dir_name(vm, d, name), strerror(errno));
}

int vm_check_mine(struct img_ctx *ctx, const char *path, const struct stat *st, mode_t type,
                  const char *doing)
{
	if ((st->st_mode & S_IFMT) != type)
		return img_set_error(ctx, -EPERM,
		                     "%s is a %s, not a %s vmlaunch made; refusing to %s it", path,
		                     vm_file_kind(st->st_mode), vm_file_kind(type), doing);
	if (st->st_uid != geteuid())
		return img_set_error(ctx, -EPERM,
		                     "%s belongs to uid %u, not to you (uid %u); refusing to %s it",
		                     path, (unsigned)st->st_uid, (unsigned)geteuid(), doing);
	return 0;
}

int vm_dir_open_file(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d,
                     const char *name, int flags, int *out)
{
	char *path = vm_dir_name(vm, d, name);
	struct stat st;
	int fd, r;

	/* O_NONBLOCK: a FIFO planted here must not hang us; O_NOCTTY for ttys. */
	fd = openat(d->fd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		if (e == ELOOP || e == ENXIO || e == EWOULDBLOCK) {
			if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
				return vm_check_mine(ctx, path, &st, S_IFREG, "open");
		}
		return img_set_error(ctx, -e, "%s: %s", path, strerror(e));
	}
	if (fstat(fd, &st) < 0) {
		r = img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	if ((r = vm_check_mine(ctx, path, &st, S_IFREG, "open")) < 0) {
		close(fd);
		return r;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	*out = fd;
	return 0;
}

int vm_dir_create(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, const char *name,
                  mode_t mode, int *out)
{
	int fd = openat(d->fd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);

	if (fd < 0) {
		struct stat st;
		char *path = vm_dir_name(vm, d, name);

		if (errno == EEXIST && fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return img_set_error(ctx, -EEXIST,
			                     "%s: a %s is in the way; refusing to "
			                     "replace it",
			                     path, vm_file_kind(st.st_mode));
		return img_set_error(ctx, -errno, "%s: %s", path, strerror(errno));
	}
	/* Past the umask (a share the guest reads); 0600 needs nothing. */
	if ((mode & 077) && fchmod(fd, mode) < 0) {
		int e = errno;

		vm_dir_unlink_fd(d, name, fd);
		close(fd);
		return img_set_error(ctx, -e, "%s: %s", vm_dir_name(vm, d, name), strerror(e));
	}
	*out = fd;
	return 0;
}

void vm_dir_unlink_fd(const struct vm_dir *d, const char *name, int fd)
{
	struct stat a, b;

	if (fstat(fd, &a) == 0 && fstatat(d->fd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		unlinkat(d->fd, name, 0);
}

int vm_dir_remove(struct img_ctx *ctx, struct img_vm *vm, const struct vm_dir *d, const char *name,
                  mode_t type)
{
	struct stat st;
	int r = vm_dir_lstat(ctx, vm, d, name, &st);

	if (r <= 0)
		return r;
	if ((r = vm_check_mine(ctx, vm_dir_name(vm, d, name), &st, type, "remove")) < 0)
		return r;
	if (unlinkat(d->fd, name, 0) < 0 && errno != ENOENT)
		return img_set_error(ctx, -errno, "%s: %s", vm_dir_name(vm, d, name),
		                     strerror(errno));
	return 0;
}

/* ---- removing an ephemeral state ------------------------------------------------ */

/* The mount @name in @dir is on (statx's mount id), 0 if the kernel does
 * not say; with the device number this tells a bind mount of the same
 * filesystem too. */
static uint64_t mount_id(int dir, const char *name)
{
	struct statx sx;

	if (statx(dir, name, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH, STATX_MNT_ID, &sx) < 0 ||
	    !(sx.stx_mask & STATX_MNT_ID))
		return 0;
	return sx.stx_mnt_id;
}

/*
 * Empty the directory @fd (which it closes): every entry relative to it,
 * subdirectories opened with O_NOFOLLOW and only on the same mount,
 * symbolic links removed themselves, never followed.
 */
static void empty_dir(int fd, dev_t dev, uint64_t mnt, int depth)
{
	DIR *dir = fdopendir(fd);
	struct dirent *e;

	if (!dir) {
		close(fd);
		return;
	}
	while ((e = readdir(dir))) {
		struct stat st;
		int sub;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISDIR(st.st_mode)) {
			unlinkat(fd, e->d_name, 0);
			continue;
		}
		if (st.st_dev != dev || depth > 32)
			continue; /* a mount point, or absurdly deep: leave it */
		sub = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		if (mount_id(sub, "") != mnt) {
			close(sub); /* a bind mount: not ours to empty */
			continue;
		}
		empty_dir(sub, dev, mnt, depth + 1);
		unlinkat(fd, e->d_name, AT_REMOVEDIR);
	}
	closedir(dir);
}

void vm_dir_rmrf(struct vm_dir *parent, struct vm_dir *d, const char *name)
{
	struct stat a, b;
	int fd;

	if (d->fd < 0 || fstat(d->fd, &a) < 0)
		return;
	fd = dup(d->fd);
	if (fd >= 0)
		empty_dir(fd, a.st_dev, mount_id(d->fd, ""), 0);
	/* The directory itself, by its name in the parent we hold, and only if
	 * that name still is the directory we emptied. */
	if (parent && parent->fd >= 0 && fstatat(parent->fd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		unlinkat(parent->fd, name, AT_REMOVEDIR);
}
