#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int net_set_nonblock(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

int net_set_nodelay(int fd)
{
	int one = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		return -errno;
	return 0;
}

void net_quickack(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

/*
 * Linux starts keepalive probes after 7200 s of idle by default; we want the kernel's
 * verdict on the same scale as the SSH keepalive. TCP_USER_TIMEOUT bounds how long sent
 * data may stay unacknowledged, which catches a blackholed peer while we are writing.
 */
int net_set_liveness(int fd, unsigned interval_s, unsigned count, unsigned user_timeout_ms)
{
	int one = 1;
	int idle = interval_s ? (int)interval_s : 1;
	int cnt = count ? (int)count : 1;
	unsigned timeout = user_timeout_ms;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout)) < 0)
		return -errno;
	return 0;
}

int net_resolve_numeric(const char *host, uint16_t port, struct sockaddr_storage *ret,
			socklen_t *ret_len)
{
	struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	char service[8];
	int r;

	snprintf(service, sizeof(service), "%u", port);
	r = getaddrinfo(host, service, &hints, &res);
	if (r != 0)
		return -EADDRNOTAVAIL;
	memcpy(ret, res->ai_addr, res->ai_addrlen);
	*ret_len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int net_listen(const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1;
	int fd, r;

	r = net_resolve_numeric(host, port, &ss, &len);
	if (r < 0)
		return r;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 511) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int net_canonical_host(const char *host, char *buf, size_t size)
{
	struct sockaddr_storage ss;
	socklen_t len;
	const void *addr;
	int r = net_resolve_numeric(host, 0, &ss, &len);

	if (r < 0)
		return r;
	if (ss.ss_family == AF_INET)
		addr = &((const struct sockaddr_in *)&ss)->sin_addr;
	else
		addr = &((const struct sockaddr_in6 *)&ss)->sin6_addr;
	if (!inet_ntop(ss.ss_family, addr, buf, (socklen_t)size))
		return -errno;
	return 0;
}

int net_check_listener(int fd, const char *host, uint16_t port)
{
	struct sockaddr_storage want, got;
	socklen_t want_len, got_len = sizeof(got);
	int type = 0, protocol = 0, listening = 0;
	socklen_t n = sizeof(int);
	int r;

	r = net_resolve_numeric(host, port, &want, &want_len);
	if (r < 0)
		return r;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) < 0)
		return -errno;
	n = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &n) < 0)
		return -errno;
	n = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &n) < 0)
		return -errno;
	if (type != SOCK_STREAM || protocol != IPPROTO_TCP || !listening)
		return -EINVAL;
	if (getsockname(fd, (struct sockaddr *)&got, &got_len) < 0)
		return -errno;
	/* Compare address and port only: sin6_flowinfo and padding may differ. */
	if (got.ss_family != want.ss_family)
		return -EADDRNOTAVAIL;
	if (want.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&want, *b = (const void *)&got;

		if (a->sin_port != b->sin_port || a->sin_addr.s_addr != b->sin_addr.s_addr)
			return -EADDRNOTAVAIL;
	} else {
		const struct sockaddr_in6 *a = (const void *)&want, *b = (const void *)&got;
		int v6only = 0;

		if (a->sin6_port != b->sin6_port ||
		    memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) != 0 ||
		    a->sin6_scope_id != b->sin6_scope_id)
			return -EADDRNOTAVAIL;
		/* With V6ONLY off, [::] takes IPv4 too: more than net_listen() would bind. */
		n = sizeof(v6only);
		if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &n) < 0)
			return -errno;
		if (!v6only)
			return -EINVAL;
	}
	return 0;
}

int net_connect_start(const struct sockaddr *sa, socklen_t len, int *ret_fd)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r;

	if (fd < 0)
		return -errno;
	if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_fd = fd;
	return 0;
}

int net_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

bool net_connect_refused(int err)
{
	switch (-err) {
	case ECONNREFUSED: /* a RST: the host is there, its port is not (sshd restarting) */
	case ECONNRESET:
	case EHOSTUNREACH: /* ICMP from a router, or no route: nothing was sent anywhere */
	case ENETUNREACH:
	case ENETDOWN:
		return true;
	default:
		return false; /* local shortages (EMFILE, EADDRNOTAVAIL) wait on the curve */
	}
}
