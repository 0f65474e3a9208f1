#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Socket helpers with no daemon state. All return 0 / fd, or a negative errno. */
int net_set_nonblock(int fd);
int net_set_nodelay(int fd);
/* TCP keepalive probes plus TCP_USER_TIMEOUT so the kernel gives up on a dead peer too. */
int net_set_liveness(int fd, unsigned interval_s, unsigned count, unsigned user_timeout_ms);
/* Asks the kernel to ACK the next segments at once; it falls back to delayed ACKs by
 * itself, so callers re-arm it after each read. */
void net_quickack(int fd);
/* Binds and listens on host:port (numeric address), non-blocking, SO_REUSEADDR. */
int net_listen(const char *host, uint16_t port);
/*
 * 0 when fd is a listening TCP socket bound to host:port (numeric) as net_listen() binds
 * it (IPv6: V6ONLY on), as a descriptor inherited from the service manager must be before
 * it is used; -EINVAL when it is not such a listening TCP socket, -EADDRNOTAVAIL when it is
 * bound elsewhere, or another -errno.
 */
int net_check_listener(int fd, const char *host, uint16_t port);
/* The numeric host in inet_ntop's canonical spelling ("::1" for "0:0::1"). */
int net_canonical_host(const char *host, char *buf, size_t size);
/* Starts a non-blocking connect; 0 on immediate success or in progress (*ret_fd set). */
int net_connect_start(const struct sockaddr *sa, socklen_t len, int *ret_fd);
/* After the socket became writable: 0 when connected, else -errno of the failure. */
int net_connect_result(int fd);
/* True for a connect error (-errno) that the server or the network gave at once: refused
 * (nothing listens), reset, no route. Another try costs a round trip, not a timeout. */
bool net_connect_refused(int err);
/* Resolves a numeric host only (no DNS); used for listeners and loopback targets. */
int net_resolve_numeric(const char *host, uint16_t port, struct sockaddr_storage *ret,
			socklen_t *ret_len);
