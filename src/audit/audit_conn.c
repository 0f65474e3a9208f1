#include "audit_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fd.h"
#include "hostkey.h"
#include "net.h"

/* What the KEXINIT connection says before it reads: any SSH-2.0 line will do. */
#define AUDIT_BANNER "SSH-2.0-moletun_audit\r\n"

static void conn_fail(struct audit_conn *c, enum audit_conn_failure why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_fail(struct audit_conn *c, enum audit_conn_failure why, const char *fmt, ...)
{
	va_list ap;

	c->failure = why;
	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline: 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int64_t left = deadline - now_ms();
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/* A TCP connection to host:port within timeout_ms, trying every address. fd or -errno. */
static int tcp_connect(const char *host, uint16_t port, long timeout_ms, char *err, size_t err_size)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
	int64_t deadline = now_ms() + timeout_ms;
	char service[8];
	int r = -ECONNREFUSED, fd = -1;

	snprintf(service, sizeof(service), "%u", port);
	r = getaddrinfo(host, service, &hints, &res);
	if (r != 0) {
		snprintf(err, err_size, "resolve %s: %s", host, gai_strerror(r));
		return -EHOSTUNREACH;
	}
	r = -ECONNREFUSED;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		r = net_connect_start(a->ai_addr, a->ai_addrlen, &fd);
		if (r < 0)
			continue;
		r = wait_fd(fd, POLLOUT, deadline);
		if (r == 0)
			r = net_connect_result(fd);
		if (r == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, err_size, "connect to %s:%u: %s", host, port, strerror(-r));
		return r;
	}
	net_set_nodelay(fd);
	return fd;
}

/* The first hop's session writes the whole buffer before returning (waiting for room in
 * the socket), so libssh2 never holds half a packet: a later read can send a window
 * adjust without meeting it (libssh2 1.10 allows one partially sent packet per session). */
static ssize_t socket_send(libssh2_socket_t fd, const void *buf, size_t len, int flags,
			   void **abstract)
{
	struct audit_hop *h = *abstract;
	int64_t deadline = now_ms() + h->conn->timeout_ms;
	size_t done = 0;

	while (done < len) {
		ssize_t n =
		    send(h->fd, (const char *)buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
		int r;

		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		r = wait_fd(h->fd, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
	return (ssize_t)len;
}

static ssize_t socket_recv(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract)
{
	struct audit_hop *h = *abstract;
	ssize_t n = recv(h->fd, buf, len, MSG_DONTWAIT);

	return n < 0 ? -errno : n;
}

/* A session above the first: its bytes go through the channel of the hop below. */
static ssize_t stream_send(libssh2_socket_t fd, const void *buf, size_t len, int flags,
			   void **abstract)
{
	struct audit_hop *h = *abstract;
	struct audit_hop *below = &h->conn->hops[h->index - 1];
	size_t done = 0;

	while (done < len) {
		ssize_t n =
		    libssh2_channel_write(below->next, (const char *)buf + done, len - done);

		if (n < 0)
			return n == LIBSSH2_ERROR_TIMEOUT ? -ETIMEDOUT : -EPIPE;
		done += (size_t)n;
	}
	return (ssize_t)len;
}

static ssize_t stream_recv(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract)
{
	struct audit_hop *h = *abstract;
	struct audit_hop *below = &h->conn->hops[h->index - 1];
	ssize_t n;

	/* without waiting: libssh2 waits on the socket (a duplicate of the real one) */
	libssh2_session_set_blocking(below->session, 0);
	n = libssh2_channel_read(below->next, buf, len);
	libssh2_session_set_blocking(below->session, 1);
	if (n == LIBSSH2_ERROR_EAGAIN)
		return -EAGAIN;
	if (n < 0)
		return -ECONNRESET;
	return n;
}

typedef ssize_t (*io_fn)(libssh2_socket_t, void *, size_t, int, void **);
typedef ssize_t (*send_fn)(libssh2_socket_t, const void *, size_t, int, void **);

static void *fn_ptr(const void *fn, size_t size)
{
	void *p = NULL;

	memcpy(&p, fn, size);
	return p;
}

/* Why the last libssh2 call failed, in its words. */
static const char *last_error(LIBSSH2_SESSION *s)
{
	char *msg = NULL;

	libssh2_session_last_error(s, &msg, NULL, 0);
	return msg && *msg ? msg : "unknown error";
}

static bool session_gone(int rc)
{
	return rc == LIBSSH2_ERROR_SOCKET_SEND || rc == LIBSSH2_ERROR_SOCKET_RECV ||
	       rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_TIMEOUT ||
	       rc == LIBSSH2_ERROR_SOCKET_TIMEOUT;
}

static int check_host_key(struct audit_conn *c, struct audit_hop *h)
{
	const struct tunnel_config *t = c->cfg;
	bool last = h->index == c->n - 1;
	char err[512], desc[160];

	hostkey_describe(h->session, desc, sizeof(desc));
	if (last)
		snprintf(c->host_key, sizeof(c->host_key), "%s", desc);
	if (t->strict_host_key_checking == HOST_KEY_NO) {
		if (last)
			c->host_key_state = AUDIT_HOST_KEY_UNVERIFIED;
		return 0;
	}
	switch (hostkey_check(h->session, t->known_hosts_file,
			      t->strict_host_key_checking == HOST_KEY_ACCEPT_NEW, h->host, h->port,
			      err, sizeof(err))) {
	case HOSTKEY_MATCH:
		return 0;
	case HOSTKEY_NOT_FOUND:
		/* the daemon would record it; the audit leaves the file to the daemon */
		if (t->strict_host_key_checking == HOST_KEY_ACCEPT_NEW) {
			if (last)
				c->host_key_state = AUDIT_HOST_KEY_NEW;
			return 0;
		}
		conn_fail(c, AUDIT_CONN_REFUSED, "%s:%u: host key %s not found in %s", h->host,
			  h->port, desc, t->known_hosts_file);
		return -1;
	case HOSTKEY_MISMATCH:
		conn_fail(c, AUDIT_CONN_REFUSED,
			  "%s:%u: HOST KEY CHANGED: the server offered %s, which differs from %s",
			  h->host, h->port, desc, t->known_hosts_file);
		return -1;
	case HOSTKEY_ERROR:
	default:
		conn_fail(c, AUDIT_CONN_CONFIG, "%s", err);
		return -1;
	}
}

static int auth_agent(struct audit_conn *c, struct audit_hop *h)
{
	struct libssh2_agent_publickey *id = NULL;
	LIBSSH2_AGENT *agent = libssh2_agent_init(h->session);
	int r = -1;

	if (!agent) {
		conn_fail(c, AUDIT_CONN_REFUSED, "ssh-agent: out of memory");
		return -1;
	}
	if (c->cfg->agent_socket)
		libssh2_agent_set_identity_path(agent, c->cfg->agent_socket);
	if (libssh2_agent_connect(agent) != 0) {
		conn_fail(c, AUDIT_CONN_REFUSED, "%s:%u: cannot connect to ssh-agent", h->host,
			  h->port);
		goto out;
	}
	/* libssh2 1.10 opens the agent's socket without SOCK_CLOEXEC */
	fd_cloexec_from(3);
	if (libssh2_agent_list_identities(agent) != 0) {
		conn_fail(c, AUDIT_CONN_REFUSED, "%s:%u: cannot list ssh-agent identities", h->host,
			  h->port);
		goto out;
	}
	while (libssh2_agent_get_identity(agent, &id, id) == 0) {
		if (libssh2_agent_userauth(agent, h->user, id) == 0) {
			r = 0;
			goto out;
		}
	}
	conn_fail(c, AUDIT_CONN_REFUSED,
		  "%s:%u: authentication failed for %s (no ssh-agent key "
		  "accepted)",
		  h->host, h->port, h->user);
out:
	libssh2_agent_disconnect(agent);
	libssh2_agent_free(agent);
	return r;
}

static int authenticate(struct audit_conn *c, struct audit_hop *h)
{
	const struct identity *id = h->identity;
	int rc;

	if (h->index == c->n - 1) {
		char *list = libssh2_userauth_list(h->session, h->user, (unsigned)strlen(h->user));

		if (!list && libssh2_userauth_authenticated(h->session)) {
			c->auth_listed = true;
			c->none_accepted = true;
			return 0;
		}
		if (!list) {
			conn_fail(c, AUDIT_CONN_NETWORK,
				  "%s:%u: listing authentication methods: %s", h->host, h->port,
				  last_error(h->session));
			return -1;
		}
		c->auth_methods = strdup(list);
		c->auth_listed = c->auth_methods != NULL;
	}
	if (id) {
		rc = libssh2_userauth_publickey_frommemory(
		    h->session, h->user, strlen(h->user), id->public_key,
		    id->public_key ? id->public_len : 0, id->private_key, id->private_len,
		    id->passphrase);
		if (rc == 0)
			return 0;
		if (session_gone(rc)) {
			conn_fail(c, AUDIT_CONN_NETWORK, "%s:%u: during authentication: %s",
				  h->host, h->port, last_error(h->session));
			return -1;
		}
		if (!c->cfg->use_agent) {
			conn_fail(c, AUDIT_CONN_REFUSED,
				  "%s:%u: authentication failed for %s (key %s: %s)", h->host,
				  h->port, h->user, h->identity_file, last_error(h->session));
			return -1;
		}
	}
	return auth_agent(c, h);
}

/* Handshake, host key and authentication of hop h, whose fd is set. 0 or -1. */
static int hop_login(struct audit_conn *c, struct audit_hop *h)
{
	const struct tunnel_config *t = c->cfg;
	char methods[256];

	h->session = libssh2_session_init_ex(NULL, NULL, NULL, h);
	if (!h->session) {
		conn_fail(c, AUDIT_CONN_NETWORK, "out of memory");
		return -1;
	}
	if (h->index == 0) {
		libssh2_session_callback_set(h->session, LIBSSH2_CALLBACK_SEND,
					     fn_ptr(&(send_fn){socket_send}, sizeof(send_fn)));
		libssh2_session_callback_set(h->session, LIBSSH2_CALLBACK_RECV,
					     fn_ptr(&(io_fn){socket_recv}, sizeof(io_fn)));
	} else {
		libssh2_session_callback_set(h->session, LIBSSH2_CALLBACK_SEND,
					     fn_ptr(&(send_fn){stream_send}, sizeof(send_fn)));
		libssh2_session_callback_set(h->session, LIBSSH2_CALLBACK_RECV,
					     fn_ptr(&(io_fn){stream_recv}, sizeof(io_fn)));
	}
	libssh2_session_set_blocking(h->session, 1);
	libssh2_session_set_timeout(h->session, c->timeout_ms);
	/* as the daemon's links: negotiate the key type known_hosts can verify */
	if (t->known_hosts_file) {
		hostkey_known_methods(h->session, t->known_hosts_file, h->host, h->port, methods,
				      sizeof(methods));
		if (methods[0])
			libssh2_session_method_pref(h->session, LIBSSH2_METHOD_HOSTKEY, methods);
	}
	if (libssh2_session_handshake(h->session, h->fd) != 0) {
		conn_fail(c, AUDIT_CONN_NETWORK, "%s:%u: SSH handshake: %s", h->host, h->port,
			  last_error(h->session));
		return -1;
	}
	if (check_host_key(c, h) < 0)
		return -1;
	return authenticate(c, h);
}

/* Opens hop h's transport: a socket, or a channel of the hop below. 0 or -1. */
static int hop_transport(struct audit_conn *c, struct audit_hop *h)
{
	struct audit_hop *below;
	char err[300];

	if (h->index == 0) {
		h->fd = tcp_connect(h->host, h->port, c->timeout_ms, err, sizeof(err));
		if (h->fd < 0) {
			conn_fail(c, AUDIT_CONN_NETWORK, "%s", err);
			return -1;
		}
		return 0;
	}
	below = &c->hops[h->index - 1];
	below->next =
	    libssh2_channel_direct_tcpip_ex(below->session, h->host, h->port, "127.0.0.1", 0);
	if (!below->next) {
		conn_fail(c, AUDIT_CONN_NETWORK, "cannot reach %s:%u from %s:%u: %s", h->host,
			  h->port, below->host, below->port, last_error(below->session));
		return -1;
	}
	h->fd = fcntl(c->hops[0].fd, F_DUPFD_CLOEXEC, 3);
	if (h->fd < 0) {
		conn_fail(c, AUDIT_CONN_NETWORK, "dup: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Reads the server's version line and KEXINIT through `read_some` into c->kexinit. */
static void read_kexinit(struct audit_conn *c,
			 ssize_t (*read_some)(void *ctx, void *buf, size_t len), void *ctx)
{
	uint8_t *buf = malloc(KEXINIT_INPUT_MAX);
	size_t len = 0;
	int r = -EAGAIN;

	if (!buf) {
		c->kexinit_error = -ENOMEM;
		return;
	}
	while (r == -EAGAIN && len < KEXINIT_INPUT_MAX) {
		ssize_t n = read_some(ctx, buf + len, KEXINIT_INPUT_MAX - len);

		if (n <= 0) {
			r = n == 0 ? -ECONNRESET : (int)n;
			break;
		}
		len += (size_t)n;
		r = kexinit_scan(buf, len, &c->kexinit);
	}
	c->kexinit_error = r == -EAGAIN ? -E2BIG : r;
	free(buf);
}

struct socket_reader {
	int fd;
	int64_t deadline;
};

static ssize_t socket_read_some(void *ctx, void *buf, size_t len)
{
	struct socket_reader *s = ctx;

	for (;;) {
		ssize_t n = recv(s->fd, buf, len, MSG_DONTWAIT);
		int r;

		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		r = wait_fd(s->fd, POLLIN, s->deadline);
		if (r < 0)
			return r;
	}
}

static ssize_t channel_read_some(void *ctx, void *buf, size_t len)
{
	ssize_t n = libssh2_channel_read(ctx, buf, len);

	if (n == LIBSSH2_ERROR_TIMEOUT)
		return -ETIMEDOUT;
	return n < 0 ? -EIO : n;
}

/*
 * The sidecar's offer, on a connection of its own: send a version line and read until its
 * first packet is complete, then hang up (sshd logs a closed connection, nothing more).
 * Only a failure to connect at all is an error; what was read, or why not, is in c.
 */
static int fetch_kexinit(struct audit_conn *c)
{
	struct audit_hop *last = &c->hops[c->n - 1];
	char err[300];

	if (c->n == 1) {
		struct socket_reader s = {.deadline = now_ms() + c->timeout_ms};

		s.fd = tcp_connect(last->host, last->port, c->timeout_ms, err, sizeof(err));
		if (s.fd < 0) {
			conn_fail(c, AUDIT_CONN_NETWORK, "%s", err);
			return -1;
		}
		if (send(s.fd, AUDIT_BANNER, strlen(AUDIT_BANNER), MSG_NOSIGNAL) < 0)
			c->kexinit_error = -errno;
		else
			read_kexinit(c, socket_read_some, &s);
		close(s.fd);
	} else {
		struct audit_hop *below = &c->hops[c->n - 2];
		LIBSSH2_CHANNEL *ch = libssh2_channel_direct_tcpip_ex(below->session, last->host,
								      last->port, "127.0.0.1", 0);

		if (!ch) {
			conn_fail(c, AUDIT_CONN_NETWORK, "cannot reach %s:%u from %s:%u: %s",
				  last->host, last->port, below->host, below->port,
				  last_error(below->session));
			return -1;
		}
		if (libssh2_channel_write(ch, AUDIT_BANNER, strlen(AUDIT_BANNER)) < 0)
			c->kexinit_error = -EIO;
		else
			read_kexinit(c, channel_read_some, ch);
		libssh2_channel_free(ch);
	}
	return 0;
}

int audit_conn_open(struct audit_conn *c, const struct tunnel_config *t)
{
	const struct identity *hop_id;
	const char *hop_file;
	char err[512];

	memset(c, 0, sizeof(*c));
	c->cfg = t;
	c->timeout_ms = (long)t->connect_timeout_ms;
	c->n = t->n_jump_hops + 1;
	for (size_t i = 0; i < c->n; i++)
		c->hops[i].fd = -1;
	if (identity_load(t, &c->identity, err, sizeof(err)) < 0 ||
	    identity_load_jump(t, &c->jump_identity, err, sizeof(err)) < 0) {
		conn_fail(c, AUDIT_CONN_CONFIG, "%s", err);
		return -1;
	}
	/* the hops' key, as the daemon picks it (tunnel.c, link_params_fill) */
	hop_id = c->jump_identity.private_key ? &c->jump_identity
		 : t->identity_file	      ? &c->identity
					      : NULL;
	hop_file = hop_id == &c->jump_identity ? t->jump_identity_file : t->identity_file;
	for (size_t i = 0; i < c->n; i++) {
		struct audit_hop *h = &c->hops[i];
		bool last = i == c->n - 1;

		h->conn = c;
		h->index = i;
		h->host = last ? t->host : t->jump_hops[i].host;
		h->port = last ? t->port : t->jump_hops[i].port;
		h->user = last ? t->user : t->jump_hops[i].user;
		h->identity = last ? (t->identity_file ? &c->identity : NULL) : hop_id;
		h->identity_file = last ? t->identity_file : hop_file;
	}
	for (size_t i = 0; i < c->n; i++) {
		if (i == c->n - 1 && fetch_kexinit(c) < 0)
			return -1;
		if (hop_transport(c, &c->hops[i]) < 0 || hop_login(c, &c->hops[i]) < 0)
			return -1;
	}
	return 0;
}

LIBSSH2_SESSION *audit_conn_session(const struct audit_conn *c)
{
	return c->hops[c->n - 1].session;
}

void audit_conn_close(struct audit_conn *c)
{
	for (size_t i = c->n; i-- > 0;) {
		struct audit_hop *h = &c->hops[i];

		if (h->session) {
			/* short: a server that went away must not hold the command */
			libssh2_session_set_timeout(h->session, 1000);
			libssh2_session_disconnect(h->session, "audit done");
			libssh2_session_free(h->session);
			h->session = NULL;
			h->next = NULL;
		}
		if (h->fd >= 0)
			close(h->fd);
		h->fd = -1;
	}
	kexinit_free(&c->kexinit);
	free(c->auth_methods);
	c->auth_methods = NULL;
	identity_finish(&c->identity);
	identity_finish(&c->jump_identity);
}
