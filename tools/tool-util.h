/* tool-util.h -- what both tools share: sizes, progress line, output files. */
#ifndef TOOL_UTIL_H
#define TOOL_UTIL_H

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <img/context.h>

extern const char *tool_name;
/* -q: tool_warn() says nothing (errors still go out). */
extern int tool_quiet;

/* "mkvmimage: <msg>" on stderr, passed through img_escape(): input bytes
 * quoted in a message never reach the terminal raw. */
void tool_verr(const char *prefix, const char *fmt, va_list ap);
void tool_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tool_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse a size: plain bytes or a K/M/G/T suffix (powers of 1024; "KiB", "MB"
 * style spellings accepted). 0 on success, -1 (message printed) on error. */
int tool_parse_size(const char *what, const char *s, uint64_t *out);

/* Progress on stderr when it is a terminal and not quiet; otherwise nothing. */
struct tool_progress {
	int enabled;
	double start;
	double last; /* when the line was last drawn */
	int shown;
};
void tool_progress_init(struct tool_progress *p, int quiet);
void tool_progress_cb(void *user, const struct img_progress *pr);
void tool_progress_done(struct tool_progress *p);
/* Log callback printing "mkvmimage: warning: ..." etc. */
void tool_log_cb(void *user, enum img_log_level level, const char *msg);

/*
 * Output files: a temporary name beside @final ("<dir>/.<base>.tmp-XXXXXX"),
 * removed by the signal handler on SIGINT/SIGTERM/SIGHUP and by
 * tool_output_abort(); renamed by tool_output_commit(). While it exists the
 * process holds an flock on it and it carries the user.libimg.tmp attribute,
 * so tool_output_begin() can tell the temporaries of a killed build of the
 * same name (warned about, and removed when provably ours and unowned) from
 * one a running build is writing (left alone).
 */
struct tool_output {
	char *final;
	char *tmp;
	int lock_fd; /* the temporary, open and flock'ed: a live owner */
};
int tool_output_begin(struct tool_output *o, const char *final);
int tool_output_commit(struct tool_output *o);
void tool_output_abort(struct tool_output *o);
/*
 * Catch SIGINT/SIGTERM/SIGHUP: remove every registered temporary, cancel
 * @ctx, and end the process @deadline seconds later if the library has not
 * returned by then (a read blocked on a pipe); 0: no deadline (vmlaunch,
 * whose graceful VM stop takes longer). SIGPIPE and SIGXFSZ are ignored:
 * they become write errors to report.
 */
void tool_install_signals(struct img_ctx *ctx, unsigned deadline);
/*
 * The build is over: block the caught signals (and the deadline) in the
 * calling thread so the ending -- commit or cleanup and its message -- is
 * not interrupted; a signal that arrives now stays pending and changes
 * nothing. Check tool_signalled() after this call, not before.
 */
void tool_signals_hold(void);
/* Did a signal arrive? (its number, or 0) */
int tool_signalled(void);

/* Between tool-output.c and tool-signal.c: the temporaries the handler
 * removes (at most 8; @p stays owned by the caller and must outlive the
 * registration), and the signals it catches (with SIGALRM, the deadline). */
void tool_tmp_register(char *p);
void tool_tmp_unregister(const char *p);
sigset_t tool_caught_signals(void);

#endif
