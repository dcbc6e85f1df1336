/*
 * vmlaunch-relay.c -- the guest-forward relay vmlaunch runs for QEMU (in
 * place of the reference's netcat), kept apart from the option handling.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tool-util.h"
#include "vmlaunch-relay.h"

/*
 * vmlaunch --relay HOSTADDR HOSTPORT: what QEMU runs for each connection to
 * a --guest-forward address (in place of the reference's "nc HOST PORT"):
 * connect to the host service and copy bytes both ways between it and
 * stdin/stdout (QEMU's end of the guest connection).
 */
int vmlaunch_relay(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	struct pollfd pf[2];
	char buf[65536];
	int s, in_open = 1;

	if (getaddrinfo(host, port, &hints, &ai) != 0) {
		tool_err("--relay: cannot resolve %s:%s", host, port);
		return 1;
	}
	s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, ai->ai_addr, ai->ai_addrlen) < 0) {
		tool_err("--relay: %s:%s: %s", host, port, strerror(errno));
		freeaddrinfo(ai);
		return 1;
	}
	freeaddrinfo(ai);
	for (;;) {
		ssize_t n;

		pf[0] = (struct pollfd){ .fd = in_open ? 0 : -1, .events = POLLIN };
		pf[1] = (struct pollfd){ .fd = s, .events = POLLIN };
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (pf[0].revents) {
			n = read(0, buf, sizeof(buf));
			if (n <= 0) {
				shutdown(s, SHUT_WR);
				in_open = 0;
			} else if (send(s, buf, (size_t)n, MSG_NOSIGNAL) != n) {
				return 1;
			}
		}
		if (pf[1].revents) {
			n = recv(s, buf, sizeof(buf), 0);
			if (n <= 0)
				return 0;
			if (write(1, buf, (size_t)n) != n)
				return 1;
		}
	}
}

/* "<this program> --relay" when its path is plain enough for QEMU to split. */
char *vmlaunch_relay_cmd(void)
{
	char exe[4096], *out;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	if (exe[strspn(exe, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+-")])
		return NULL; /* QEMU would split it: fall back to nc */
	return asprintf(&out, "%s --relay", exe) < 0 ? NULL : out;
}
