#pragma once
#include <stdint.h>

/*
 * Where a tunnel's local_forward listeners come from and go back to: the daemon keeps
 * them open across tunnel and process restarts. NULL ops: bind, and close at the end.
 */
struct listen_ops {
	void *userdata;
	/* A non-blocking listening socket on host:port (numeric); fd or -errno. */
	int (*open)(void *userdata, const char *host, uint16_t port);
	/* The tunnel is done with fd, a socket `open` returned. */
	void (*close)(void *userdata, int fd);
};
