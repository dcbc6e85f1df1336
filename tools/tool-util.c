/*
 * tool-util.c -- shared by mkvmimage and vmlaunch: size parsing, the
 * progress line, temporary output files that never survive a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool-util.h"

const char *tool_name = "libimg";

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
static volatile sig_atomic_t got_signal;
static unsigned sig_deadline;

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

int tool_output_begin(struct tool_output *o, const char *final)
{
	char *d = strdup(final), *b = strdup(final);
	const char *dir = dirname(d), *base = basename(b);
	int fd;

	o->final = strdup(final);
	if (asprintf(&o->tmp, "%s/.%s.tmp-XXXXXX", dir, base) < 0)
		abort();
	free(d);
	free(b);
	fd = mkstemp(o->tmp);
	if (fd < 0) {
		tool_err("%s: cannot create a file in its directory: %s", final, strerror(errno));
		free(o->tmp);
		o->tmp = NULL;
		free(o->final);
		o->final = NULL;
		return -1;
	}
	/* Images are not secrets: the usual mode, not mkstemp's 0600. */
	{
		mode_t um = umask(0);

		umask(um);
		fchmod(fd, 0666 & ~um);
	}
	close(fd);
	register_tmp(o->tmp);
	return 0;
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
	free(o->final);
	o->final = NULL;
}

static void on_signal(int sig)
{
	/* Only async-signal-safe work: unlink and set flags. The build loop
	 * sees the cancellation and unwinds; the temporaries are already gone. */
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_paths[i])
			unlink(tmp_paths[i]);
	got_signal = sig;
	if (sig_ctx)
		img_ctx_cancel(sig_ctx);
	/* The library stops at its next cancellation check; a call blocked
	 * elsewhere (a read from a pipe that never ends) must not keep us:
	 * after the deadline SIGALRM's default action ends the process. */
	if (sig_deadline)
		alarm(sig_deadline);
}

void tool_install_signals(struct img_ctx *ctx, unsigned deadline)
{
	struct sigaction sa;

	sig_deadline = deadline;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sig_ctx = ctx;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	/* A file size limit reached is a write error (EFBIG) to report, not a
	 * silent death that would leave the temporary behind. */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
}

int tool_signalled(void)
{
	return got_signal;
}
