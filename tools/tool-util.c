/*
 * tool-util.c -- shared by mkvmimage and vmlaunch: messages, size parsing,
 * the progress line and the log callback. Temporary outputs are in
 * tool-output.c, the signal handling that removes them in tool-signal.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
