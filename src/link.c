#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "tunnel.h"

/*
 * libssh2 owns the protocol; this file owns the socket. libssh2 reads and writes only
 * through link_send/link_recv: sends are appended to link.out and never fail partially
 * (libssh2 1.10 allows one partial packet per session, and a second sender then fails with
 * LIBSSH2_ERROR_BAD_USE), and once the link is dead both drop their work so tearing a
 * session down never waits on the network.
 */

static ssize_t link_send(libssh2_socket_t fd, const void *buf, size_t len, int flags,
			 void **abstract)
{
	struct tunnel *t = *abstract;
	struct link *l = &t->link;

	if (fd != l->fd) {
		/* the ssh-agent socket goes through the same callback */
		ssize_t n = send(fd, buf, len, flags | MSG_NOSIGNAL);
		return n < 0 ? -errno : n;
	}
	if (l->dead || l->io_error)
		return (ssize_t)len;
	if (buffer_len(&l->out) + len > LINK_OUT_MAX) {
		/* The high-water mark stops clients; what still grows is libssh2's own traffic
		 * (replies, window adjusts) towards a server that takes nothing. */
		l->out_overflow = true;
		l->io_error = ENOBUFS;
		tunnel_want_pump(t);
		return (ssize_t)len;
	}
	if (buffer_len(&l->out) == 0)
		l->last_tx = ev_now(t->loop);
	if (buffer_append(&l->out, buf, len) < 0)
		return -ENOMEM;
	ev_prepare_start(t->loop, &t->flush);
	return (ssize_t)len;
}

static ssize_t link_recv(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract)
{
	struct tunnel *t = *abstract;
	struct link *l = &t->link;
	ssize_t n;

	if (fd != l->fd) {
		n = recv(fd, buf, len, flags);
		return n < 0 ? -errno : n;
	}
	if (l->dead)
		return -ECONNRESET;
	if (l->io_error)
		return -l->io_error;
	/* The socket is level-triggered: a fake EAGAIN only defers bytes to the next event. */
	if (l->rx_drained)
		return -EAGAIN;
	/* libssh2 reads for as long as bytes come (a handshake or libssh2_poll would never
	 * return to the loop against a peer that streams): a budget per loop iteration ends
	 * that with a fake EAGAIN, and the still readable socket resumes it next iteration. */
	if (l->rx_iteration != ev_iteration(t->loop)) {
		l->rx_iteration = ev_iteration(t->loop);
		l->rx_budget = LINK_READ_BUDGET;
	}
	if (l->rx_budget == 0)
		return -EAGAIN;
	if (len > l->rx_budget)
		len = l->rx_budget;
	do
		n = recv(fd, buf, len, flags);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		l->rx_budget -= (size_t)n;
		/*
		 * sshd does not set TCP_NODELAY on its socket, so a small reply (a channel open
		 * confirmation) queued behind unacknowledged data waits for our ACK, which Linux
		 * delays by up to 40 ms. ACKing at once turns a burst of channel opens from a
		 * series of 40 ms stalls into a series of round trips.
		 */
		net_quickack(fd);
		l->last_rx = ev_now(t->loop);
		l->rx_progress = true;
		tunnel_want_pump(t);
		return n;
	}
	if (n == 0) {
		l->io_error = ECONNRESET;
		return -ECONNRESET;
	}
	if (errno == EAGAIN) {
		l->rx_drained = true;
		return -EAGAIN;
	}
	l->io_error = errno;
	return -errno;
}

int link_flush(struct tunnel *t)
{
	struct link *l = &t->link;
	ssize_t n;
	bool was_full;

	if (!l->active || l->fd < 0)
		return 0;
	if (l->dead || l->io_error) {
		buffer_consume(&l->out, buffer_len(&l->out));
		return 0;
	}
	if (buffer_len(&l->out) == 0)
		return 0;
	was_full = tunnel_out_full(t);
	n = buffer_write_fd(&l->out, l->fd);
	if (n < 0 && n != -EAGAIN) {
		l->io_error = (int)-n;
		return (int)n;
	}
	if (n > 0)
		l->last_tx = ev_now(t->loop);
	if (buffer_len(&l->out) > 0) {
		ev_io_start(t->loop, &l->wio);
	} else {
		ev_io_stop(t->loop, &l->wio);
		buffer_compact(&l->out);
	}
	if (was_full && !tunnel_out_full(t))
		forward_resume_clients(t);
	return 0;
}

/* libssh2 takes callbacks as void *; ISO C has no cast between the two pointer kinds. */
typedef ssize_t (*send_fn)(libssh2_socket_t, const void *, size_t, int, void **);
typedef ssize_t (*recv_fn)(libssh2_socket_t, void *, size_t, int, void **);

static void *send_ptr(send_fn fn)
{
	void *p;

	memcpy(&p, &fn, sizeof(p));
	return p;
}

static void *recv_ptr(recv_fn fn)
{
	void *p;

	memcpy(&p, &fn, sizeof(p));
	return p;
}

/*
 * libssh2 allocates through these, so that a session's memory is counted and capped: a
 * server may otherwise make libssh2 1.10 keep every unsolicited packet, or reserve
 * whatever an exit-signal's name length says. A refused allocation fails the libssh2 call
 * that made it; the pump then sees sessmem_over_cap() and names the cause.
 */
size_t link_memory_cap(const struct tunnel *t)
{
	uint64_t cap = t->cfg->session_memory_max;

	for (size_t i = 0; i < t->n_forwards; i++) {
		uint64_t window = t->cfg->forwards[i].kind == FORWARD_LOCAL
					  ? FORWARD_WINDOW
					  : LIBSSH2_CHANNEL_WINDOW_DEFAULT;

		/* twice the window: libssh2 keeps each packet whole, with its headers */
		cap += t->stats[i].active * 2 * window;
	}
	return cap > SIZE_MAX ? SIZE_MAX : (size_t)cap;
}

static void link_fit_cap(struct tunnel *t, size_t size)
{
	struct sessmem *m = &t->link.mem;

	/* the sum over forwards only matters near the base limit */
	if (m->used + size > t->cfg->session_memory_max || m->cap > t->cfg->session_memory_max)
		m->cap = link_memory_cap(t);
}

static void *link_alloc(size_t size, void **abstract)
{
	struct tunnel *t = *abstract;

	link_fit_cap(t, size);
	return sessmem_alloc(&t->link.mem, size);
}

static void *link_realloc(void *p, size_t size, void **abstract)
{
	struct tunnel *t = *abstract;

	link_fit_cap(t, size);
	return sessmem_realloc(&t->link.mem, p, size);
}

static void link_free(void *p, void **abstract)
{
	struct tunnel *t = *abstract;

	/* read before the block goes: libssh2 frees the session through here last */
	sessmem_free(&t->link.mem, p);
}

static void link_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct tunnel *t = w->data;

	t->link.rx_drained = false;
	tunnel_pump(t);
}

static void link_start_session(struct tunnel *t);

static void link_try_connect(struct tunnel *t)
{
	struct link *l = &t->link;
	int r = -ECONNREFUSED;

	for (; l->addr; l->addr = l->addr->ai_next) {
		r = net_connect_start(l->addr->ai_addr, l->addr->ai_addrlen, &l->fd);
		if (r == 0)
			break;
	}
	if (!l->addr) {
		tunnel_fail(t, false, "connect to %s:%u: %s", t->cfg->host, t->cfg->port,
			    strerror(-r));
		return;
	}
	l->step = LINK_TCP_CONNECT;
	ev_io_set(&l->rio, l->fd, EV_READ);
	ev_io_set(&l->wio, l->fd, EV_WRITE);
	ev_io_start(t->loop, &l->wio);
}

static void link_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct tunnel *t = w->data;
	struct link *l = &t->link;
	int r;

	if (l->step != LINK_TCP_CONNECT) {
		if (link_flush(t) < 0)
			tunnel_fail(t, false, "send to server: %s", strerror(l->io_error));
		return;
	}
	ev_io_stop(loop, &l->wio);
	r = net_connect_result(l->fd);
	if (r < 0) {
		close(l->fd);
		l->fd = -1;
		if (l->addr->ai_next) {
			l->addr = l->addr->ai_next;
			link_try_connect(t);
			return;
		}
		tunnel_fail(t, false, "connect to %s:%u: %s", t->cfg->host, t->cfg->port,
			    strerror(-r));
		return;
	}
	link_start_session(t);
}

static void link_resolved(struct tunnel *t, int gai_rc, struct addrinfo *res)
{
	struct link *l = &t->link;

	if (gai_rc != 0) {
		tunnel_fail(t, false, "resolve %s: %s", t->cfg->host, gai_strerror(gai_rc));
		return;
	}
	l->addrs = res;
	l->addr = res;
	link_try_connect(t);
}

static void link_resolve_poll(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tunnel *t = w->data;
	struct link *l = &t->link;
	int r = gai_error(l->gai);
	struct addrinfo *res;

	if (r == EAI_INPROGRESS)
		return;
	ev_timer_stop(loop, w);
	res = l->gai->ar_result;
	free((char *)l->gai->ar_name);
	free((char *)l->gai->ar_service);
	free((void *)l->gai->ar_request);
	free(l->gai);
	l->gai = NULL;
	link_resolved(t, r, res);
}

/* Starts resolving and connecting. Names are resolved with getaddrinfo_a so DNS never
 * blocks the loop; numeric addresses resolve at once. */
int link_open(struct tunnel *t)
{
	struct link *l = &t->link;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo numeric = hints, *res = NULL;
	char service[8];

	memset(l, 0, sizeof(*l));
	l->active = true;
	l->fd = -1;
	l->step = LINK_RESOLVING;
	buffer_init(&l->out);
	ev_io_init(&l->rio, link_readable, -1, EV_READ);
	ev_io_init(&l->wio, link_writable, -1, EV_WRITE);
	ev_timer_init(&l->resolve_poll, link_resolve_poll, 0.005, 0.01);
	l->rio.data = l->wio.data = l->resolve_poll.data = t;
	snprintf(service, sizeof(service), "%u", t->cfg->port);

	numeric.ai_flags |= AI_NUMERICHOST;
	if (getaddrinfo(t->cfg->host, service, &numeric, &res) == 0) {
		link_resolved(t, 0, res);
		return 0;
	}
	l->gai = calloc(1, sizeof(*l->gai));
	if (l->gai) {
		struct addrinfo *req = malloc(sizeof(*req));

		l->gai->ar_name = strdup(t->cfg->host);
		l->gai->ar_service = strdup(service);
		if (req)
			*req = hints;
		l->gai->ar_request = req;
	}
	if (!l->gai || !l->gai->ar_name || !l->gai->ar_service || !l->gai->ar_request ||
	    getaddrinfo_a(GAI_NOWAIT, &l->gai, 1, NULL) != 0) {
		tunnel_fail(t, false, "resolve %s: out of resources", t->cfg->host);
		return -ENOMEM;
	}
	ev_timer_start(t->loop, &l->resolve_poll);
	return 0;
}

static void link_start_session(struct tunnel *t)
{
	struct link *l = &t->link;
	unsigned interval_s = (unsigned)((t->cfg->keepalive_interval_ms + 999) / 1000);
	uint64_t dead_ms = t->cfg->keepalive_interval_ms * t->cfg->keepalive_count_max;

	net_set_nodelay(l->fd);
	net_set_liveness(l->fd, interval_s, t->cfg->keepalive_count_max,
			 dead_ms > 0xffffffffu ? 0xffffffffu : (unsigned)dead_ms);
	sessmem_init(&l->mem, t->cfg->session_memory_max);
	l->session = libssh2_session_init_ex(link_alloc, link_free, link_realloc, t);
	if (!l->session) {
		tunnel_fail(t, false, "cannot create SSH session: out of memory");
		return;
	}
	libssh2_session_callback_set(l->session, LIBSSH2_CALLBACK_SEND, send_ptr(link_send));
	libssh2_session_callback_set(l->session, LIBSSH2_CALLBACK_RECV, recv_ptr(link_recv));
	libssh2_session_set_blocking(l->session, 0);
	link_setup_session(t);
	l->last_rx = ev_now(t->loop);
	l->step = LINK_HANDSHAKE;
	ev_io_start(t->loop, &l->rio);
	tunnel_pump(t);
}

/* Closes the connection without waiting on the network. `goodbye` sends a disconnect
 * message first if the socket takes it right away. */
void link_close(struct tunnel *t, bool goodbye)
{
	struct link *l = &t->link;

	if (!l->active)
		return;
	ev_io_stop(t->loop, &l->rio);
	ev_io_stop(t->loop, &l->wio);
	ev_timer_stop(t->loop, &l->resolve_poll);
	if (l->gai) {
		/* A lookup still running cannot be freed; glibc owns it until it ends. */
		if (gai_cancel(l->gai) != EAI_NOTCANCELED) {
			free((char *)l->gai->ar_name);
			free((char *)l->gai->ar_service);
			free((void *)l->gai->ar_request);
			freeaddrinfo(l->gai->ar_result);
			free(l->gai);
		}
		l->gai = NULL;
	}
	if (l->agent) {
		libssh2_agent_disconnect(l->agent);
		libssh2_agent_free(l->agent);
	}
	if (l->session) {
		if (goodbye && !l->dead && !l->io_error && l->step >= LINK_AUTH_KEY) {
			libssh2_session_disconnect(l->session, "moletun shutting down");
			buffer_write_fd(&l->out, l->fd);
		}
		l->dead = true;
		log_debug("tunnel %s: session memory: %zu bytes at close, peak %zu", t->cfg->name,
			  l->mem.used, l->mem.peak);
		libssh2_session_free(l->session);
	}
	if (l->fd >= 0)
		close(l->fd);
	if (l->addrs)
		freeaddrinfo(l->addrs);
	free(l->remotes);
	buffer_finish(&l->out);
	memset(l, 0, sizeof(*l));
	l->fd = -1;
}
