/* vmlaunch-relay.h -- vmlaunch --relay HOSTADDR HOSTPORT (guest forwards). */
#ifndef VMLAUNCH_RELAY_H
#define VMLAUNCH_RELAY_H

/* Connect to HOST:PORT and copy bytes both ways with stdin/stdout; exit code. */
int vmlaunch_relay(const char *host, const char *port);
/* "<this program> --relay" when QEMU can split its path, else NULL (malloc'ed). */
char *vmlaunch_relay_cmd(void);

#endif
