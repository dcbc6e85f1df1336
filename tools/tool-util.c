/*
 * tool-util.c -- shared by mkvmimage and vmlaunch: size parsing, the
 * progress line, temporary output files that never survive a failure.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "tool-util.h"

const char *tool_name = "libimg";
int tool_quiet;

/* One line on stderr; what it quotes of the input is escaped (img_escape). */
static void print_line(const char *prefix, const char *msg)
{
	char safe[4096];

	img_escape(msg, strlen(msg), safe, sizeof(safe));
	fprintf(stderr, "%s: %s%s\n", tool_name, prefix, safe);
}

void tool_verr(const char *prefix, const char *fmt, va_list ap)
{
	char raw[4096];

	vsnprintf(raw, sizeof(raw), fmt, ap);
	print_line(prefix, raw);
}

void tool_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tool_verr("", fmt, ap);
	va_end(ap);
}

void tool_warn(const char *fmt, ...)
{
	va_list ap;

	if (tool_quiet)
		return;
	va_start(ap, fmt);
	tool_verr("warning: ", fmt, ap);
	va_end(ap);
}

int tool_parse_size(const char *what, const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-' || *s == '+' || (*s < '0' || *s > '9'))
		goto bad;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		goto bad;
	if (*end) {
		switch (*end) {
		case 'k':
		case 'K':
			shift = 10;
			break;
		case 'm':
		case 'M':
			shift = 20;
			break;
		case 'g':
		case 'G':
			shift = 30;
			break;
		case 't':
		case 'T':
			shift = 40;
			break;
		default:
			goto bad;
		}
		end++;
		if (!strcasecmp(end, "ib") || !strcasecmp(end, "b"))
			end += strlen(end);
		if (*end)
			goto bad;
	}
	if (shift && v > (UINT64_MAX >> shift))
		goto bad;
	*out = (uint64_t)v << shift;
	return 0;
bad:
	tool_err("%s: not a size: '%s' (bytes, or a number with K, M, G or T)", what, s ? s : "");
	return -1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void tool_progress_init(struct tool_progress *p, int quiet)
{
	p->enabled = !quiet && isatty(2);
	p->start = now_s();
	p->shown = 0;
}

void tool_progress_cb(void *user, const struct img_progress *pr)
{
	struct tool_progress *p = user;
	double t, rate;

	if (!p->enabled)
		return;
	/* A terminal line redrawn ten times a second is plenty. */
	if (p->shown && now_s() - p->last < 0.1 && pr->bytes_done < pr->bytes_total)
		return;
	p->last = now_s();
	t = p->last - p->start;
	rate = t > 0 ? pr->bytes_done / t / (1 << 20) : 0;
	fprintf(stderr, "\r\033[K%s: %s: %" PRIu64 " MiB", tool_name, pr->phase ? pr->phase : "",
	        pr->bytes_done >> 20);
	if (pr->bytes_total)
		fprintf(stderr, " of %" PRIu64 " MiB", pr->bytes_total >> 20);
	fprintf(stderr, ", %" PRIu64, pr->files_done);
	if (pr->files_total)
		fprintf(stderr, "/%" PRIu64, pr->files_total);
	fprintf(stderr, " files, %.0f MiB/s", rate);
	p->shown = 1;
}

void tool_progress_done(struct tool_progress *p)
{
	if (p->enabled && p->shown)
		fputs("\r\033[K", stderr);
	p->shown = 0;
}

void tool_log_cb(void *user, enum img_log_level level, const char *msg)
{
	struct tool_progress *p = user;

	if (p)
		tool_progress_done(p);
	print_line(level == IMG_LOG_WARN ? "warning: " : "", msg);
}

/* Temporaries the signal handler removes. Plain arrays: handler-safe. */
#define MAX_TMP 8
static char *volatile tmp_paths[MAX_TMP];
static struct img_ctx *volatile sig_ctx;
static volatile sig_atomic_t got_signal, deadline_armed;
static unsigned sig_deadline;

/* Signals whose handler removes the temporaries. */
static const int caught[] = { SIGINT, SIGTERM, SIGHUP };
/* Set once the main thread has taken over the ending (tool_signals_hold):
 * the deadline handler then leaves the ending to it. */
static volatile sig_atomic_t holding;

static void register_tmp(char *p)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (!tmp_paths[i]) {
			tmp_paths[i] = p;
			return;
		}
}

static void unregister_tmp(const char *p)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_paths[i] == p)
			tmp_paths[i] = NULL;
}

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

static sigset_t caught_set(void)
{
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(caught) / sizeof(caught[0]); i++)
		sigaddset(&set, caught[i]);
	sigaddset(&set, SIGALRM);
	return set;
}

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
	sigset_t block = caught_set(), old;
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
	register_tmp(o->tmp);
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
	unregister_tmp(o->tmp);
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
		unregister_tmp(o->tmp);
		free(o->tmp);
		o->tmp = NULL;
	}
	release_lock(o);
	free(o->final);
	o->final = NULL;
}

static void unlink_tmps(void)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_paths[i])
			unlink(tmp_paths[i]);
}

static void on_signal(int sig)
{
	/* Only async-signal-safe work: unlink and set flags. The build loop
	 * sees the cancellation and unwinds; the temporaries are already gone. */
	unlink_tmps();
	got_signal = sig;
	if (sig_ctx)
		img_ctx_cancel(sig_ctx);
	/* The library stops at its next cancellation check; a call blocked
	 * elsewhere (a read from a pipe that never ends) must not keep us:
	 * after the deadline on_deadline() ends the process. Armed by the
	 * first signal only: a second ^C does not push the deadline back. */
	if (sig_deadline && got_signal && !deadline_armed) {
		deadline_armed = 1;
		alarm(sig_deadline);
	}
}

/*
 * The deadline passed and the build has not returned: end it here, the way
 * the main thread would have (temporaries removed, "interrupted", exit 1),
 * never by SIGALRM's default action, which says "Alarm clock" and leaves
 * exit status 142. Unless the main thread is already ending.
 */
static void on_deadline(int sig)
{
	static const char tail[] = ": interrupted; nothing written\n";

	(void)sig;
	if (holding)
		return;
	unlink_tmps();
	if (write(2, tool_name, strlen(tool_name)) < 0 || write(2, tail, sizeof(tail) - 1) < 0) {
		/* nothing more to say */
	}
	_exit(1);
}

void tool_install_signals(struct img_ctx *ctx, unsigned deadline)
{
	struct sigaction sa;

	sig_deadline = deadline;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	/* one handler at a time: a second signal waits for the first */
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(caught) / sizeof(caught[0]); i++)
		sigaddset(&sa.sa_mask, caught[i]);
	sigaddset(&sa.sa_mask, SIGALRM);
	sig_ctx = ctx;
	for (size_t i = 0; i < sizeof(caught) / sizeof(caught[0]); i++)
		sigaction(caught[i], &sa, NULL);
	if (deadline) {
		sa.sa_handler = on_deadline;
		sigaction(SIGALRM, &sa, NULL);
	}
	/* A file size limit reached is a write error (EFBIG) to report, not a
	 * silent death that would leave the temporary behind. */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
}

void tool_signals_hold(void)
{
	sigset_t set = caught_set();
	/* The flag first: the library's threads are gone, but should one still
	 * take the deadline, it must leave the ending to us. */
	holding = 1;
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int tool_signalled(void)
{
	return got_signal;
}
