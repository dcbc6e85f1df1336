/*
 * tool-signal.c -- SIGINT/SIGTERM/SIGHUP end a tool cleanly: the registered
 * temporaries are removed in the handler (async-signal-safe: unlink and
 * flags only), the library is cancelled, and a deadline ends a process the
 * library does not return from (a read blocked on a pipe).
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "tool-util.h"

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

void tool_tmp_register(char *p)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (!tmp_paths[i]) {
			tmp_paths[i] = p;
			return;
		}
}

void tool_tmp_unregister(const char *p)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_paths[i] == p)
			tmp_paths[i] = NULL;
}

sigset_t tool_caught_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(caught) / sizeof(caught[0]); i++)
		sigaddset(&set, caught[i]);
	sigaddset(&set, SIGALRM);
	return set;
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
	sigset_t set = tool_caught_signals();
	/* The flag first: the library's threads are gone, but should one still
	 * take the deadline, it must leave the ending to us. */
	holding = 1;
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int tool_signalled(void)
{
	return got_signal;
}
