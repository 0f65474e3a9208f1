#include "link.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "net.h"

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
	struct link *l = *abstract;

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
		link_want_pump(l);
		return (ssize_t)len;
	}
	if (buffer_len(&l->out) == 0)
		l->last_tx = clock_now();
	if (buffer_append(&l->out, buf, len) < 0)
		return -ENOMEM;
	ev_prepare_start(l->loop, &l->flush);
	return (ssize_t)len;
}

/* A stream link's input: what link_stream_pump read from the channel. */
static ssize_t stream_recv(struct link *l, void *buf, size_t len)
{
	size_t have = buffer_len(&l->stream_in);
	bool was_full = have >= LINK_STREAM_IN_MAX;

	if (have == 0) {
		if (l->stream_eof) {
			l->io_error = ECONNRESET;
			return -ECONNRESET;
		}
		l->rx_drained = true;
		return -EAGAIN;
	}
	if (len > have)
		len = have;
	memcpy(buf, l->stream_in.data + l->stream_in.start, len);
	buffer_consume(&l->stream_in, len);
	buffer_compact(&l->stream_in);
	l->last_rx = clock_now();
	l->rx_progress = true;
	link_want_pump(l);
	/* the channel was left unread while this was full: read it again */
	if (was_full && buffer_len(&l->stream_in) < LINK_STREAM_IN_MAX)
		link_want_pump(l->below);
	return (ssize_t)len;
}

/* A stream link's output: into the channel while its window takes it, then out of the
 * hop below at once. 0, or -EPIPE when the channel failed. */
static int stream_flush(struct link *l)
{
	while (buffer_len(&l->out) > 0) {
		ssize_t n = libssh2_channel_write(l->stream, l->out.data + l->out.start,
						  buffer_len(&l->out));

		if (n > 0) {
			buffer_consume(&l->out, (size_t)n);
			l->last_tx = clock_now();
			continue;
		}
		if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
			break; /* the window is closed: the hop below pumps us when it opens */
		if (ssh_error_fatal((int)n))
			link_session_error(l->below, (int)n);
		l->io_error = EPIPE;
		return -EPIPE;
	}
	buffer_compact(&l->out);
	return link_flush(l->below);
}

static ssize_t link_recv(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract)
{
	struct link *l = *abstract;
	ssize_t n;

	if (fd != l->fd) {
		n = recv(fd, buf, len, flags);
		return n < 0 ? -errno : n;
	}
	if (l->dead)
		return -ECONNRESET;
	if (l->io_error)
		return -l->io_error;
	if (l->below)
		return stream_recv(l, buf, len);
	/* The socket is level-triggered: a fake EAGAIN only defers bytes to the next event. */
	if (l->rx_drained)
		return -EAGAIN;
	/* libssh2 reads for as long as bytes come (a handshake or libssh2_poll would never
	 * return to the loop against a peer that streams): a budget per loop iteration ends
	 * that with a fake EAGAIN, and the still readable socket resumes it next iteration. */
	if (l->rx_iteration != ev_iteration(l->loop)) {
		l->rx_iteration = ev_iteration(l->loop);
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
		l->last_rx = clock_now();
		l->rx_progress = true;
		link_want_pump(l);
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

bool link_ready(const struct link *l)
{
	return l->active && l->step == LINK_READY;
}

bool link_out_full(const struct link *l)
{
	return buffer_len(&l->out) >= LINK_OUT_HIGH_WATER;
}

/* Sends what the socket takes now. 0, or -errno when the socket failed. */
int link_flush(struct link *l)
{
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
	was_full = link_out_full(l);
	if (l->below) {
		int r = stream_flush(l);

		if (r < 0)
			return r;
		if (was_full && !link_out_full(l) && l->ops.on_drained)
			l->ops.on_drained(l->ops.userdata);
		return 0;
	}
	n = buffer_write_fd(&l->out, l->fd);
	if (n < 0 && n != -EAGAIN) {
		l->io_error = (int)-n;
		return (int)n;
	}
	if (n > 0)
		l->last_tx = clock_now();
	if (buffer_len(&l->out) > 0) {
		ev_io_start(l->loop, &l->wio);
	} else {
		ev_io_stop(l->loop, &l->wio);
		buffer_compact(&l->out);
	}
	if (was_full && !link_out_full(l) && l->ops.on_drained)
		l->ops.on_drained(l->ops.userdata);
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
 * that made it; the pump then sees sessmem_over_cap() and names the cause. The layer above
 * adds what its open channels are owed (their windows).
 */
static void link_fit_cap(struct link *l, size_t size)
{
	struct sessmem *m = &l->mem;
	uint64_t cap = l->p.session_memory_max;

	/* the allowance only matters near the base limit */
	if (m->used + size <= cap && m->cap <= cap)
		return;
	if (l->ops.allowance)
		cap += l->ops.allowance(l->ops.userdata);
	m->cap = cap > SIZE_MAX ? SIZE_MAX : (size_t)cap;
}

static void *link_alloc(size_t size, void **abstract)
{
	struct link *l = *abstract;

	link_fit_cap(l, size);
	return sessmem_alloc(&l->mem, size);
}

static void *link_realloc(void *p, size_t size, void **abstract)
{
	struct link *l = *abstract;

	link_fit_cap(l, size);
	return sessmem_realloc(&l->mem, p, size);
}

static void link_free(void *p, void **abstract)
{
	struct link *l = *abstract;

	/* read before the block goes: libssh2 frees the session through here last */
	sessmem_free(&l->mem, p);
}

void link_want_pump(struct link *l)
{
	l->pump_wanted = true;
	ev_prepare_start(l->loop, &l->flush);
}

void link_session_error(struct link *l, int rc)
{
	if (!l->session_error)
		l->session_error = rc;
	link_want_pump(l);
}

/* A session that allocates through the counting allocators and does its socket I/O
 * through link_send/link_recv. 0 or -ENOMEM. */
int link_session_new(struct link *l)
{
	sessmem_init(&l->mem, l->p.session_memory_max);
	l->session = libssh2_session_init_ex(link_alloc, link_free, link_realloc, l);
	if (!l->session)
		return -ENOMEM;
	libssh2_session_callback_set(l->session, LIBSSH2_CALLBACK_SEND, send_ptr(link_send));
	libssh2_session_callback_set(l->session, LIBSSH2_CALLBACK_RECV, recv_ptr(link_recv));
	libssh2_session_set_blocking(l->session, 0);
	return 0;
}

bool ssh_error_fatal(int rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_CHANNEL_OUTOFORDER:
	case LIBSSH2_ERROR_CHANNEL_FAILURE:
	case LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED:
	case LIBSSH2_ERROR_CHANNEL_UNKNOWN:
	case LIBSSH2_ERROR_CHANNEL_WINDOW_EXCEEDED:
	case LIBSSH2_ERROR_CHANNEL_PACKET_EXCEEDED:
	case LIBSSH2_ERROR_CHANNEL_CLOSED:
	case LIBSSH2_ERROR_CHANNEL_EOF_SENT:
		return false;
	default:
		return true;
	}
}

const char *link_last_error(const struct link *l)
{
	char *msg = NULL;

	if (l->out_overflow)
		return "server is not reading: send buffer over its limit (16 MiB)";
	if (l->io_error == ECONNRESET)
		return "connection closed by server";
	/* TCP_USER_TIMEOUT (net_set_liveness): our bytes went unacknowledged for the
	 * keepalive bound, which can beat the liveness timer to a server that stopped reading */
	if (l->io_error == ETIMEDOUT)
		return "nothing acknowledged within the keepalive bound (TCP user timeout): the "
		       "server stopped reading or the path is down";
	if (l->io_error)
		return strerror(l->io_error);
	if (!l->session)
		return "no session";
	libssh2_session_last_error(l->session, &msg, NULL, 0);
	return msg && *msg ? msg : "unknown error";
}

/* Reports the end of the session upward once; the link is not touched afterwards. */
static void link_vfail(struct link *l, enum link_failure why, const char *fmt, va_list ap)
{
	char reason[256];

	if (!l->active || l->failed)
		return;
	vsnprintf(reason, sizeof(reason), fmt, ap);
	if (sessmem_over_cap(&l->mem)) {
		/* whatever libssh2 call failed, the refused allocation is why */
		snprintf(reason, sizeof(reason),
			 "server sent too much unsolicited data: session memory over "
			 "session_memory_max (%.1f MiB in use, a request for %zu bytes refused)",
			 (double)l->mem.used / (1 << 20), l->mem.refused);
	}
	l->failed = true;
	l->ops.on_fail(l->ops.userdata, why, reason);
}

void link_fail(struct link *l, bool needs_human, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	link_vfail(l, needs_human ? LINK_FAILURE_HUMAN : LINK_FAILURE_NETWORK, fmt, ap);
	va_end(ap);
}

void link_fail_as(struct link *l, enum link_failure why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	link_vfail(l, why, fmt, ap);
	va_end(ap);
}

const char *link_step_str(enum link_step step)
{
	static const char *const names[] = {
	    [LINK_RESOLVING] = "resolving the host name",
	    [LINK_TCP_CONNECT] = "TCP connect",
	    [LINK_HANDSHAKE] = "SSH banner and key exchange",
	    [LINK_AUTH_KEY] = "authentication",
	    [LINK_AUTH_AGENT] = "authentication through ssh-agent",
	    [LINK_READY] = "ready",
	};

	return (unsigned)step <= LINK_READY ? names[step] : "unknown step";
}
