/*
 * tool-output.c -- an output written under a temporary name beside its
 * final one and renamed when complete; the temporaries a killed build left
 * are found, named, and removed only when provably ours and unowned.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tool-util.h"

/*
 * Temporaries and what proves one ours. A temporary is "<dir>/.<base>.tmp-"
 * and six mkstemp characters, a regular file, and from its creation until
 * the build ends the building process holds an exclusive flock on it and it
 * carries the extended attribute TMP_XATTR ("libimg-tmp-v1 pid=N"). A
 * build killed with SIGKILL leaves the file but its lock dies with it. The
 * next build of the same name finds such files and says so; it removes one
 * only when all of these hold: the name pattern, a regular file with one
 * link, owned by us, our attribute, and the lock free (no live owner) --
 * checked on the file opened without following symlinks, and its name
 * checked to still be that file just before the unlink.
 */
#define TMP_XATTR  "user.libimg.tmp"
#define TMP_MARKER "libimg-tmp-v1"

/* Does @name look like a temporary of @base? */
static int tmp_name_of(const char *name, const char *base)
{
	size_t bl = strlen(base), nl = strlen(name);

	if (nl != 1 + bl + 5 + 6 || name[0] != '.' || memcmp(name + 1, base, bl) ||
	    memcmp(name + 1 + bl, ".tmp-", 5))
		return 0;
	for (size_t i = nl - 6; i < nl; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9')))
			return 0;
	return 1;
}

/* Why @name may not be removed (NULL: it may); *fdp is left open and locked. */
static const char *stale_verdict(int dirfd, const char *name, int *fdp, struct stat *st, long *pid)
{
	char mark[64];
	ssize_t n;
	int fd;

	*fdp = -1;
	*pid = 0;
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == ELOOP ? "a symlink" : "cannot be opened";
	*fdp = fd;
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode))
		return "not a regular file";
	if (st->st_uid != geteuid())
		return "owned by another user";
	if (st->st_nlink != 1)
		return "it has other links";
	n = fgetxattr(fd, TMP_XATTR, mark, sizeof(mark) - 1);
	if (n < 0)
		return "it carries no libimg marker";
	mark[n] = '\0';
	if (strncmp(mark, TMP_MARKER " pid=", strlen(TMP_MARKER " pid=")))
		return "it carries no libimg marker";
	*pid = strtol(mark + strlen(TMP_MARKER " pid="), NULL, 10);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return "a running build holds it";
	return NULL;
}

/*
 * Temporaries of @final a killed build left: name each, remove those that
 * are provably ours and unowned (above). Never fails the build.
 */
static void stale_tmps(const char *final)
{
	char *d = strdup(final), *b = strdup(final);
	const char *dir = dirname(d), *base = basename(b);
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int dfd2 = dirfd >= 0 ? dup(dirfd) : -1;
	DIR *dp = dfd2 >= 0 ? fdopendir(dfd2) : NULL;
	struct dirent *de;

	if (!dp && dfd2 >= 0)
		close(dfd2);
	while (dp && (de = readdir(dp))) {
		const char *why;
		struct stat st, now;
		long pid;
		int fd;

		if (!tmp_name_of(de->d_name, base))
			continue;
		why = stale_verdict(dirfd, de->d_name, &fd, &st, &pid);
		if (!why && (fstatat(dirfd, de->d_name, &now, AT_SYMLINK_NOFOLLOW) < 0 ||
		             now.st_dev != st.st_dev || now.st_ino != st.st_ino))
			why = "it changed while being looked at";
		if (!why && unlinkat(dirfd, de->d_name, 0) < 0)
			why = strerror(errno);
		if (!why)
			tool_warn(
			    "%s/%s: removed a temporary (%lld bytes) left by an earlier build "
			    "(pid %ld) that did not finish",
			    dir, de->d_name, (long long)st.st_size, pid);
		else
			tool_warn(
			    "%s/%s: looks like a temporary an earlier build left, not removed: "
			    "%s",
			    dir, de->d_name, why);
		if (fd >= 0)
			close(fd);
	}
	if (dp)
		closedir(dp);
	if (dirfd >= 0)
		close(dirfd);
	free(d);
	free(b);
}

int tool_output_begin(struct tool_output *o, const char *final)
{
	char *d = strdup(final), *b = strdup(final), mark[64];
	const char *dir = dirname(d), *base = basename(b);
	sigset_t block = tool_caught_signals(), old;
	int fd;

	stale_tmps(final);
	o->final = strdup(final);
	o->lock_fd = -1;
	if (asprintf(&o->tmp, "%s/.%s.tmp-XXXXXX", dir, base) < 0)
		abort();
	free(d);
	free(b);
	/* No signal between creating the file and registering it for removal:
	 * it would be left behind. */
	pthread_sigmask(SIG_BLOCK, &block, &old);
	fd = mkostemp(o->tmp, O_CLOEXEC);
	if (fd < 0) {
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		tool_err("%s: cannot create a file in its directory: %s", final, strerror(errno));
		free(o->tmp);
		o->tmp = NULL;
		free(o->final);
		o->final = NULL;
		return -1;
	}
	tool_tmp_register(o->tmp);
	/* The lock first, then the marker: whoever sees the marker finds the
	 * file owned. Without xattrs (some file systems) a leftover is only
	 * named, never removed. */
	flock(fd, LOCK_EX);
	snprintf(mark, sizeof(mark), TMP_MARKER " pid=%ld", (long)getpid());
	(void)fsetxattr(fd, TMP_XATTR, mark, strlen(mark), 0);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* Images are not secrets: the usual mode, not mkstemp's 0600. */
	{
		mode_t um = umask(0);

		umask(um);
		fchmod(fd, 0666 & ~um);
	}
	o->lock_fd = fd; /* held open (and locked) until commit or abort */
	return 0;
}

/* (A struct never begun is all zeros: its fd 0 is not ours to close.) */
static void release_lock(struct tool_output *o)
{
	if (o->final && o->lock_fd >= 0)
		close(o->lock_fd);
	o->lock_fd = -1;
}

int tool_output_commit(struct tool_output *o)
{
	if (rename(o->tmp, o->final) < 0) {
		tool_err("%s: %s", o->final, strerror(errno));
		tool_output_abort(o);
		return -1;
	}
	tool_tmp_unregister(o->tmp);
	free(o->tmp);
	o->tmp = NULL;
	/* The finished file keeps no marker of ours. */
	if (o->lock_fd >= 0)
		(void)fremovexattr(o->lock_fd, TMP_XATTR);
	release_lock(o);
	/* Make the rename durable. */
	{
		char *d = strdup(o->final);
		int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd >= 0) {
			fsync(fd);
			close(fd);
		}
		free(d);
	}
	free(o->final);
	o->final = NULL;
	return 0;
}

void tool_output_abort(struct tool_output *o)
{
	if (o->tmp) {
		unlink(o->tmp);
		tool_tmp_unregister(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
	}
	release_lock(o);
	free(o->final);
	o->final = NULL;
}
