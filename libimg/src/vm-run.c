/*
 * vm-run.c -- supervise a VM: swtpm first (waiting for its control socket),
 * then QEMU (fork + exec of the argv, never a shell), a private QMP
 * connection over a socketpair, the console log tailed for --expect and
 * copied to --serial-log, and a graceful stop: QMP system_powerdown, a
 * grace period, quit, then SIGKILL. Every child is reaped before return.
 *
 * QMP is the JSON protocol of QEMU's docs/interop/qmp-spec: a greeting,
 * qmp_capabilities, then {"execute": ...} lines; we only send and drain.
 * Children get PR_SET_PDEATHSIG so a killed vmlaunch leaves no VM behind.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vm-private.h"

struct child {
	pid_t pid;
	int status;
	int done;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

static int poll_child(struct child *c)
{
	int st;
	pid_t p;

	if (c->pid <= 0 || c->done)
		return c->done;
	p = waitpid(c->pid, &st, WNOHANG);
	if (p == c->pid) {
		c->status = st;
		c->done = 1;
	}
	return c->done;
}

static int wait_child(struct child *c, double seconds)
{
	double end = now_s() + seconds;

	while (!poll_child(c) && now_s() < end)
		sleep_ms(20);
	return c->done;
}

/* Make sure @c is gone: SIGTERM, then SIGKILL, always reaped. */
static void stop_child(struct child *c, double grace)
{
	if (c->pid <= 0 || poll_child(c))
		return;
	kill(c->pid, SIGTERM);
	if (wait_child(c, grace))
		return;
	kill(c->pid, SIGKILL);
	while (waitpid(c->pid, &c->status, 0) < 0 && errno == EINTR)
		;
	c->done = 1;
}

/*
 * fork + exec @argv. The child gets /dev/null (or the terminal) on stdin,
 * @keep_fd as VM_CTL_FD, the state dir's lock @lock_fd as VM_LOCK_FD (so
 * the lock outlives a killed vmlaunch until its children are gone too),
 * nothing else; with @cwd_fd >= 0 it runs in that directory; exec failure
 * comes back through a close-on-exec pipe as an errno.
 */
static int spawn(struct img_ctx *ctx, char *const *argv, int cwd_fd, int own_pgrp, int stdin_null,
                 int keep_fd, int lock_fd, int out_fd, struct child *c)
{
	int pfd[2], err = 0;
	ssize_t n;
	pid_t pid, parent;

	memset(c, 0, sizeof(*c));
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return img_set_error(ctx, -errno, "pipe: %s", strerror(errno));
	parent = getpid();
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return img_set_error(ctx, -errno, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		sigset_t none;
		int e, errfd;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127); /* the parent died before the line above */
		if (own_pgrp)
			setpgid(0, 0);
		if (cwd_fd >= 0 && fchdir(cwd_fd) < 0) {
			e = errno;
			(void)!write(pfd[1], &e, sizeof(e));
			_exit(127);
		}
		if (stdin_null) {
			int nul = open("/dev/null", O_RDONLY);

			if (nul >= 0 && nul != 0) {
				dup2(nul, 0);
				close(nul);
			}
		}
		if (out_fd >= 0) {
			dup2(out_fd, 1);
			dup2(out_fd, 2);
		}
		/* Out of the way of 3 and 4 first, then into place. */
		errfd = fcntl(pfd[1], F_DUPFD_CLOEXEC, 10);
		if (keep_fd >= 0)
			keep_fd = fcntl(keep_fd, F_DUPFD, 10);
		if (lock_fd >= 0)
			lock_fd = fcntl(lock_fd, F_DUPFD, 10);
		if (keep_fd >= 0)
			dup2(keep_fd, VM_CTL_FD);
		if (lock_fd >= 0)
			dup2(lock_fd, VM_LOCK_FD);
		/* Nothing else leaks into the child (the error pipe is CLOEXEC). */
		for (int fd = 3; fd < 1024; fd++)
			if (fd != errfd && !(fd == VM_CTL_FD && keep_fd >= 0) &&
			    !(fd == VM_LOCK_FD && lock_fd >= 0))
				close(fd);
		execvp(argv[0], argv);
		e = errno;
		(void)!write(errfd, &e, sizeof(e));
		_exit(127);
	}
	close(pfd[1]);
	while ((n = read(pfd[0], &err, sizeof(err))) < 0 && errno == EINTR)
		;
	close(pfd[0]);
	c->pid = pid;
	if (n == sizeof(err)) {
		waitpid(pid, &c->status, 0);
		c->done = 1;
		return img_set_error(ctx, -err, "cannot run %s: %s", argv[0], strerror(err));
	}
	return 0;
}

/* ---- QMP -------------------------------------------------------------------------- */

static int qmp_send(int fd, const char *cmd)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "{\"execute\": \"%s\"}\n", cmd);

	return send(fd, buf, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* Read and drop whatever QEMU said (greeting, returns, events). */
static void qmp_drain(int fd)
{
	char buf[4096];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* ---- console ---------------------------------------------------------------------- */

struct tail {
	int fd;      /* the console log, read from where we left off */
	int copy_fd; /* --serial-log, or -1 */
	const char *want;
	size_t wlen;
	char *keep; /* the last wlen-1 bytes, for matches across reads */
	size_t nkeep;
	int found;
};

static void tail_step(struct tail *t)
{
	char buf[8192];
	ssize_t n;

	if (t->fd < 0)
		return;
	while ((n = read(t->fd, buf, sizeof(buf))) > 0) {
		if (t->copy_fd >= 0)
			(void)!write(t->copy_fd, buf, (size_t)n);
		if (t->want && !t->found) {
			size_t tot = t->nkeep + (size_t)n;
			char *w = malloc(tot);

			if (!w)
				continue;
			memcpy(w, t->keep, t->nkeep);
			memcpy(w + t->nkeep, buf, (size_t)n);
			if (memmem(w, tot, t->want, t->wlen))
				t->found = 1;
			t->nkeep = IMG_MIN(tot, t->wlen - 1);
			memcpy(t->keep, w + tot - t->nkeep, t->nkeep);
			free(w);
		}
	}
}

/* ---- the run ---------------------------------------------------------------------- */

/* A socket QEMU or swtpm made in the state: nothing else is removed. */
static void unlink_sock(const struct vm_dir *d, const char *name)
{
	struct stat st;

	if (d->fd >= 0 && fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISSOCK(st.st_mode) && st.st_uid == geteuid())
		unlinkat(d->fd, name, 0);
}

static int start_swtpm(struct img_ctx *ctx, struct img_vm *vm, struct child *tpm)
{
	char *argv[16];
	/* swtpm (0.7) has no escape for ',' in its option values: it runs in
	 * its state directory and is given names relative to it. */
	char *state = vm_printf(vm, "dir=.,mode=0600");
	char *ctrl =
	    vm_printf(vm, "type=unixio,path=%s,mode=0600", strrchr(vm->swtpm_sock, '/') + 1);
	char *log = vm_printf(vm, "file=%s,level=2", strrchr(vm->swtpm_log, '/') + 1);
	double end;
	int i = 0, r;

	argv[i++] = (char *)vm->o.swtpm;
	argv[i++] = "socket";
	argv[i++] = "--tpm2";
	argv[i++] = "--tpmstate";
	argv[i++] = state;
	argv[i++] = "--ctrl";
	argv[i++] = ctrl;
	argv[i++] = "--log";
	argv[i++] = log;
	argv[i++] = "--terminate";
	argv[i] = NULL;
	if (!state || !ctrl || !log)
		return img_set_error(ctx, -ENOMEM, "out of memory");
	if ((r = spawn(ctx, argv, vm->tpm_dir->fd, 1, 1, -1, vm->lock_fd, -1, tpm)) < 0)
		return r;
	/* Wait for the control socket; do not connect (that would be QEMU's). */
	end = now_s() + 10;
	for (;;) {
		struct stat st;

		if (fstatat(vm->tpm_dir->fd, "swtpm.ctrl", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISSOCK(st.st_mode))
			return 0;
		if (poll_child(tpm))
			return img_set_error(
			    ctx, -EIO,
			    "swtpm exited (status %d) before its socket %s appeared; "
			    "see %s",
			    exit_code(tpm->status), vm->swtpm_sock, vm->swtpm_log);
		if (now_s() > end) {
			stop_child(tpm, 1);
			return img_set_error(ctx, -ETIMEDOUT,
			                     "swtpm did not create %s within 10 s; see %s",
			                     vm->swtpm_sock, vm->swtpm_log);
		}
		sleep_ms(20);
	}
}

/* Tail the console while waiting up to @seconds for QEMU to exit. */
static int wait_qemu(struct child *q, struct tail *t, int ctl, double seconds)
{
	double end = now_s() + seconds;

	while (!poll_child(q) && now_s() < end) {
		tail_step(t);
		if (ctl >= 0)
			qmp_drain(ctl);
		sleep_ms(50);
	}
	return q->done;
}

static void stop_vm(struct img_vm *vm, struct child *q, struct tail *t, int ctl)
{
	if (poll_child(q))
		return;
	if (ctl >= 0 && qmp_send(ctl, "system_powerdown") == 0 &&
	    wait_qemu(q, t, ctl, vm->o.stop_timeout_s))
		return;
	if (ctl >= 0 && qmp_send(ctl, "quit") == 0 && wait_qemu(q, t, ctl, 5))
		return;
	stop_child(q, 2);
}

int img_vm_run(struct img_ctx *ctx, struct img_vm *vm, struct img_vm_result *res)
{
	const struct img_vm_opts *o = &vm->o;
	struct child tpm = { 0 }, qemu = { 0 };
	struct tail t = { .fd = -1, .copy_fd = -1 };
	int sp[2] = { -1, -1 }, r;
	double deadline = 0;

	memset(res, 0, sizeof(*res));
	if (vm->state_is_template || vm->state.fd < 0)
		return img_set_error(ctx, -EINVAL, "img_vm_run before img_vm_prepare");
	if ((r = img_check_cancel(ctx)) < 0)
		return r; /* a signal came while the state was prepared: start nothing */
	if (o->tpm && (r = start_swtpm(ctx, vm, &tpm)) < 0)
		goto out;

	t.fd = openat(vm->state.fd, "console.log", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (vm->serial_fd >= 0)
		t.copy_fd = fcntl(vm->serial_fd, F_DUPFD_CLOEXEC, 3);
	if (o->expect && *o->expect) {
		t.want = o->expect;
		t.wlen = strlen(o->expect);
		t.keep = malloc(t.wlen);
		if (!t.keep) {
			r = img_set_error(ctx, -ENOMEM, "out of memory");
			goto out;
		}
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		r = img_set_error(ctx, -errno, "socketpair: %s", strerror(errno));
		goto out;
	}
	/* Headless runs get their own process group: a terminal's Ctrl-C reaches
	 * only us, and we stop the VM properly. On the stdio console QEMU keeps
	 * the terminal (its chardev has signal=off). */
	r = spawn(ctx, vm->argv, -1, o->console != IMG_VM_CONSOLE_STDIO,
	          o->console != IMG_VM_CONSOLE_STDIO, sp[1], vm->lock_fd, -1, &qemu);
	close(sp[1]);
	sp[1] = -1;
	if (r < 0)
		goto out;
	if (o->timeout_s)
		deadline = now_s() + o->timeout_s;
	qmp_send(sp[0], "qmp_capabilities");

	for (;;) {
		struct pollfd pf = { .fd = sp[0], .events = POLLIN };

		tail_step(&t);
		if (poll_child(&qemu))
			break;
		if (t.found) {
			res->expect_found = 1;
			stop_vm(vm, &qemu, &t, sp[0]);
			break;
		}
		if (img_ctx_cancelled(ctx)) {
			res->cancelled = 1;
			stop_vm(vm, &qemu, &t, sp[0]);
			break;
		}
		if (deadline && now_s() > deadline) {
			res->timed_out = 1;
			stop_vm(vm, &qemu, &t, sp[0]);
			break;
		}
		if (poll(&pf, 1, 100) > 0)
			qmp_drain(sp[0]);
		if (tpm.pid && poll_child(&tpm)) {
			/* The TPM went away under a running VM: stop rather than limp on. */
			img_log(ctx, IMG_LOG_WARN,
			        "swtpm exited (status %d) while the VM ran; see %s",
			        exit_code(tpm.status), vm->swtpm_log);
			stop_vm(vm, &qemu, &t, sp[0]);
			break;
		}
	}
	tail_step(&t);
	if (!res->expect_found && t.found)
		res->expect_found = 1;
	if (t.want && !res->expect_found && !res->timed_out && !res->cancelled)
		res->stopped_first = 1;
	res->exit_status = exit_code(qemu.status);
	r = 0;
out:
	if (qemu.pid > 0 && !qemu.done)
		stop_vm(vm, &qemu, &t, sp[0]);
	/* swtpm --terminate exits when QEMU's connection goes; make sure. */
	if (tpm.pid > 0 && !wait_child(&tpm, 3)) {
		if (r == 0) /* QEMU ran and connected: --terminate should have ended it */
			img_log(ctx, IMG_LOG_WARN, "swtpm did not exit after QEMU; stopping it");
		stop_child(&tpm, 2);
	} else if (tpm.pid > 0 && exit_code(tpm.status) != 0 && r == 0) {
		img_log(ctx, IMG_LOG_WARN, "swtpm exited with status %d; see %s",
		        exit_code(tpm.status), vm->swtpm_log);
	}
	if (sp[0] >= 0)
		close(sp[0]);
	if (t.fd >= 0)
		close(t.fd);
	if (t.copy_fd >= 0)
		close(t.copy_fd);
	free(t.keep);
	/* Sockets are only meaningful while the VM runs. */
	unlink_sock(&vm->state, "qmp.sock");
	unlink_sock(&vm->state, "qga.sock");
	if (o->tpm)
		unlink_sock(vm->tpm_dir, "swtpm.ctrl");
	return r;
}
