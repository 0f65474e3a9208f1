#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "tunnel.h"

/*
 * Client connections and their channels. Bytes move through one shared scratch buffer;
 * a conn holds memory only for bytes the other side has not taken yet, so idle
 * connections cost a struct and a libssh2 channel.
 */

#define IO_CHUNK     (64 * 1024)
#define ACCEPT_BATCH 64

static char scratch[IO_CHUNK];

static void conn_client_readable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_client_writable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_hold_expired(struct ev_loop *loop, ev_timer *w, int revents);

static const char *conn_label(const struct conn *c, char *buf, size_t size)
{
	const struct forward_spec *f = &c->tunnel->cfg->forwards[c->forward];

	if (f->kind == FORWARD_LOCAL)
		snprintf(buf, size, "%s:%u -> %s:%u", f->listen_host, f->listen_port,
			 f->target_host, f->target_port);
	else
		snprintf(buf, size, "remote %s:%u -> %s:%u", f->listen_host, f->listen_port,
			 f->target_host, f->target_port);
	return buf;
}

struct conn *conn_new(struct tunnel *t, size_t forward, int fd, enum conn_state state)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->tunnel = t;
	c->forward = forward;
	c->fd = fd;
	c->state = state;
	list_init(&c->open_link);
	ev_io_init(&c->rio, conn_client_readable, fd, EV_READ);
	ev_io_init(&c->wio, conn_client_writable, fd, EV_WRITE);
	ev_timer_init(&c->hold, conn_hold_expired, 0.0, 0.0);
	c->rio.data = c->wio.data = c->hold.data = c;
	list_insert_tail(&t->conns, &c->link);
	if (fd >= 0) {
		t->stats[forward].active++;
		t->stats[forward].connections_total++;
	}
	return c;
}

/* Closes the client side: no more events, no more bytes, not counted as active. */
static void conn_drop_client(struct conn *c)
{
	struct tunnel *t = c->tunnel;

	ev_io_stop(t->loop, &c->rio);
	ev_io_stop(t->loop, &c->wio);
	ev_timer_stop(t->loop, &c->hold);
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
		t->stats[c->forward].active--;
	}
	buffer_finish(&c->up);
	buffer_finish(&c->down);
}

/* Frees the conn now. The channel, if any, must already be freed or be owned by a session
 * that is about to be freed. */
void conn_destroy(struct conn *c)
{
	conn_drop_client(c);
	list_remove(&c->open_link);
	list_remove(&c->link);
	free(c);
}

/* The client side is finished: close it and release the channel without waiting on the
 * network (libssh2 waits for the peer's CLOSE; the pump retries until it is freed). */
void conn_close(struct conn *c)
{
	struct tunnel *t = c->tunnel;

	conn_drop_client(c);
	if (c->state == CONN_OPENING && t->open_queue.next != &c->open_link) {
		conn_destroy(c);
		return;
	}
	if (c->state == CONN_OPENING)
		return; /* its open is in flight: the pump frees the channel when it lands */
	c->state = CONN_CLOSING;
	if (!c->channel || libssh2_channel_free(c->channel) != LIBSSH2_ERROR_EAGAIN) {
		c->channel = NULL;
		conn_destroy(c);
	}
}

/* Counts a client the forward closed without serving it. */
static void forward_count_rejected(struct tunnel *t, size_t forward, enum reject_reason why)
{
	t->stats[forward].rejected[why]++;
}

/* A held client whose down_hold ran out was turned away because the tunnel is down, as it
 * would have been at once with down_hold 0. */
static void conn_hold_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	forward_count_rejected(c->tunnel, c->forward, REJECT_DOWN);
	log_info("tunnel %s: closing held client: tunnel still %s after down_hold",
		 c->tunnel->cfg->name, tunnel_state_str(c->tunnel->state));
	conn_destroy(c);
}

static void accept_one(struct listener *li, int fd, const struct sockaddr_storage *ss)
{
	struct tunnel *t = li->tunnel;
	const struct tunnel_config *cfg = t->cfg;
	struct forward_stats *st = &t->stats[li->forward];
	struct conn *c;

	if (st->active >= cfg->max_connections) {
		forward_count_rejected(t, li->forward, REJECT_MAX_CONNECTIONS);
		log_warn("tunnel %s: max_connections (%u) reached on %s:%u; closing new client",
			 cfg->name, cfg->max_connections, cfg->forwards[li->forward].listen_host,
			 cfg->forwards[li->forward].listen_port);
		close(fd);
		return;
	}
	if (t->state != TUNNEL_UP && cfg->down_hold_ms == 0) {
		/* Fail fast: the application sees EOF now instead of hanging in connect. */
		forward_count_rejected(t, li->forward, REJECT_DOWN);
		log_debug("tunnel %s: client closed: tunnel is %s", cfg->name,
			  tunnel_state_str(t->state));
		close(fd);
		return;
	}
	net_set_nodelay(fd);
	c = conn_new(t, li->forward, fd, t->state == TUNNEL_UP ? CONN_OPENING : CONN_HELD);
	if (!c) {
		close(fd);
		return;
	}
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &in->sin_addr, c->peer_host, sizeof(c->peer_host));
		c->peer_port = ntohs(in->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, c->peer_host, sizeof(c->peer_host));
		c->peer_port = ntohs(in6->sin6_port);
	} else {
		snprintf(c->peer_host, sizeof(c->peer_host), "127.0.0.1");
	}
	if (c->state == CONN_HELD) {
		ev_timer_set(&c->hold, (double)cfg->down_hold_ms / 1000.0, 0.0);
		ev_timer_start(t->loop, &c->hold);
		return;
	}
	list_insert_tail(&t->open_queue, &c->open_link);
	tunnel_want_pump(t);
}

void forward_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *li = w->data;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd =
		    accept4(li->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			accept_one(li, fd, &ss);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* Out of descriptors: the listener stays readable, so pause instead of
			 * spinning; connections wait in the backlog meanwhile. */
			ev_tstamp now = ev_now(loop);

			if (now - li->last_warn >= 10.0) {
				log_warn(
				    "tunnel %s: accept: %s; pausing accepts for 100ms (repeats "
				    "are not logged for 10s)",
				    li->tunnel->cfg->name, strerror(errno));
				li->last_warn = now;
			}
			ev_io_stop(loop, &li->io);
			/* a one-shot timer that already fired restarts with no time left */
			ev_timer_set(&li->pause, 0.1, 0.0);
			ev_timer_start(loop, &li->pause);
		}
		break;
	}
}

void forward_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *li = w->data;

	ev_io_start(loop, &li->io);
}

void forward_tunnel_up(struct tunnel *t)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &t->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state != CONN_HELD)
			continue;
		ev_timer_stop(t->loop, &c->hold);
		c->state = CONN_OPENING;
		list_insert_tail(&t->open_queue, &c->open_link);
	}
	if (!list_empty(&t->open_queue))
		tunnel_want_pump(t);
}

/* The session is going away: every conn with a channel dies with it; held clients wait. */
void forward_tunnel_down(struct tunnel *t)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &t->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state == CONN_HELD)
			continue;
		c->channel = NULL; /* freed with the session */
		conn_destroy(c);
	}
}

void forward_resume_clients(struct tunnel *t)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &t->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->hwm_blocked) {
			c->hwm_blocked = false;
			if (c->state == CONN_OPEN && !c->client_eof && buffer_len(&c->up) == 0)
				ev_io_start(t->loop, &c->rio);
		}
	}
	tunnel_want_pump(t); /* for conns whose pending bytes waited */
}

/* Both directions finished: release the conn. */
static bool conn_finish_if_done(struct conn *c)
{
	if (c->client_eof && c->channel_eof && buffer_len(&c->down) == 0) {
		conn_close(c);
		return true;
	}
	return false;
}

/* Sends EOF to the channel once every client byte went through. 0 or a fatal rc. */
static int conn_forward_client_eof(struct conn *c)
{
	int rc;

	if (!c->client_eof || buffer_len(&c->up) > 0 || c->eof_sent)
		return 0;
	rc = libssh2_channel_send_eof(c->channel);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	c->eof_sent = true;
	if (rc < 0 && ssh_error_fatal(rc))
		return rc;
	return conn_finish_if_done(c) ? -1 : 0;
}

/* Writes `len` bytes to the channel; what the window does not take is kept in c->up and
 * the client is not read until it drains. Returns 0, or a fatal rc; -1 if conn closed. */
static int conn_write_channel(struct conn *c, const char *data, size_t len)
{
	struct tunnel *t = c->tunnel;
	size_t off = 0;

	while (off < len) {
		ssize_t n = libssh2_channel_write(c->channel, data + off, len - off);

		if (n > 0) {
			off += (size_t)n;
			t->stats[c->forward].bytes_out += (uint64_t)n;
			continue;
		}
		if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
			break;
		if (ssh_error_fatal((int)n))
			return (int)n;
		conn_close(c);
		return -1;
	}
	if (off < len) {
		if (buffer_append(&c->up, data + off, len - off) < 0) {
			conn_close(c);
			return -1;
		}
		ev_io_stop(t->loop, &c->rio);
	}
	return 0;
}

/* Retries bytes the channel window refused earlier. */
static int conn_flush_up(struct conn *c)
{
	struct tunnel *t = c->tunnel;

	while (buffer_len(&c->up) > 0) {
		ssize_t n =
		    libssh2_channel_write(c->channel, c->up.data + c->up.start, buffer_len(&c->up));
		if (n > 0) {
			buffer_consume(&c->up, (size_t)n);
			t->stats[c->forward].bytes_out += (uint64_t)n;
			continue;
		}
		if (n == 0 || n == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (ssh_error_fatal((int)n))
			return (int)n;
		conn_close(c);
		return -1;
	}
	buffer_compact(&c->up);
	if (c->client_eof)
		return conn_forward_client_eof(c);
	if (!c->hwm_blocked)
		ev_io_start(t->loop, &c->rio);
	return 0;
}

/* Moves channel data to the client until the channel is empty or the client is full.
 * Returns 0, a fatal rc, or -1 if the conn was closed. */
static int conn_read_channel(struct conn *c)
{
	struct tunnel *t = c->tunnel;

	while (!c->channel_eof && buffer_len(&c->down) == 0) {
		ssize_t n = libssh2_channel_read(c->channel, scratch, sizeof(scratch));
		ssize_t w;

		if (n == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (n < 0) {
			if (ssh_error_fatal((int)n))
				return (int)n;
			conn_close(c);
			return -1;
		}
		if (n == 0) {
			c->channel_eof = true;
			shutdown(c->fd, SHUT_WR);
			return conn_finish_if_done(c) ? -1 : 0;
		}
		t->stats[c->forward].bytes_in += (uint64_t)n;
		w = send(c->fd, scratch, (size_t)n, MSG_NOSIGNAL);
		if (w < 0 && errno != EAGAIN && errno != EINTR) {
			conn_close(c);
			return -1;
		}
		if (w < 0)
			w = 0;
		if (w < n) {
			if (buffer_append(&c->down, scratch + w, (size_t)(n - w)) < 0) {
				conn_close(c);
				return -1;
			}
			ev_io_start(t->loop, &c->wio);
		}
	}
	return 0;
}

static void conn_client_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	struct tunnel *t = c->tunnel;
	ssize_t n;
	int rc = 0;

	if (tunnel_out_full(t)) {
		c->hwm_blocked = true;
		ev_io_stop(loop, &c->rio);
		return;
	}
	n = recv(c->fd, scratch, sizeof(scratch), 0);
	if (n > 0) {
		rc = conn_write_channel(c, scratch, (size_t)n);
	} else if (n == 0) {
		c->client_eof = true;
		ev_io_stop(loop, &c->rio);
		rc = conn_forward_client_eof(c);
	} else if (errno != EAGAIN && errno != EINTR) {
		conn_close(c);
		return;
	}
	if (rc < -1)
		tunnel_fail(t, false, "%s", ssh_last_error(t));
}

static void conn_client_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	struct tunnel *t = c->tunnel;
	ssize_t n;
	int rc;

	if (c->state == CONN_CONNECTING) {
		ev_io_stop(loop, &c->wio);
		rc = net_connect_result(c->fd);
		if (rc < 0) {
			char label[600];

			t->stats[c->forward].open_failures++;
			log_warn("tunnel %s: %s: connect to target: %s", t->cfg->name,
				 conn_label(c, label, sizeof(label)), strerror(-rc));
			conn_close(c);
			return;
		}
		net_set_nodelay(c->fd);
		c->state = CONN_OPEN;
		ev_io_start(loop, &c->rio);
		tunnel_want_pump(t);
		return;
	}
	n = buffer_write_fd(&c->down, c->fd);
	if (n < 0 && n != -EAGAIN) {
		conn_close(c);
		return;
	}
	if (buffer_len(&c->down) > 0)
		return;
	ev_io_stop(loop, &c->wio);
	buffer_compact(&c->down);
	rc = conn_read_channel(c);
	if (rc < -1)
		tunnel_fail(t, false, "%s", ssh_last_error(t));
}

/*
 * libssh2_channel_direct_tcpip_ex() with a receive window of FORWARD_WINDOW instead of
 * libssh2's 2 MiB: a client that reads nothing makes the session hold up to one window
 * for it. The open message is RFC 4254 7.2's: host, port, originator host and port.
 */
static LIBSSH2_CHANNEL *open_direct_tcpip(LIBSSH2_SESSION *session, const char *host,
					  unsigned port, const char *shost, unsigned sport)
{
	unsigned char msg[2 * (4 + 255) + 8], *p = msg;
	size_t host_len = strlen(host), shost_len = strlen(shost);
	const struct {
		const char *s;
		size_t len;
		unsigned port;
	} parts[] = {{host, host_len, port}, {shost, shost_len, sport}};

	if (host_len > 255 || shost_len > 255)
		return NULL;
	for (size_t i = 0; i < 2; i++) {
		uint32_t n = htonl((uint32_t)parts[i].len), pn = htonl(parts[i].port);

		memcpy(p, &n, 4);
		memcpy(p + 4, parts[i].s, parts[i].len);
		memcpy(p + 4 + parts[i].len, &pn, 4);
		p += 8 + parts[i].len;
	}
	return libssh2_channel_open_ex(session, "direct-tcpip", sizeof("direct-tcpip") - 1,
				       FORWARD_WINDOW, LIBSSH2_CHANNEL_PACKET_DEFAULT,
				       (const char *)msg, (unsigned)(p - msg));
}

/* Opens channels for queued clients, one at a time (libssh2 keeps open state per
 * session). Returns 0 or a fatal rc. */
static int pump_opens(struct tunnel *t)
{
	while (!list_empty(&t->open_queue)) {
		struct conn *c = list_entry(t->open_queue.next, struct conn, open_link);
		const struct forward_spec *f = &t->cfg->forwards[c->forward];
		LIBSSH2_CHANNEL *ch;
		int rc;

		ch = open_direct_tcpip(t->link.session, f->target_host, f->target_port,
				       c->peer_host, c->peer_port);
		if (!ch) {
			char label[600];

			rc = libssh2_session_last_errno(t->link.session);
			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (t->link.io_error || ssh_error_fatal(rc))
				return rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
			list_remove(&c->open_link);
			if (c->probe) {
				if (!c->probe_done) {
					c->probe_done = true;
					t->stats[c->forward].probe_failures++;
					tunnel_target_result(t, c->forward, false,
							     ssh_last_error(t));
				}
				conn_destroy(c);
				continue;
			}
			t->stats[c->forward].open_failures++;
			log_warn("tunnel %s: %s: channel open failed: %s", t->cfg->name,
				 conn_label(c, label, sizeof(label)), ssh_last_error(t));
			/* a client's open is evidence on the target too */
			tunnel_target_result(t, c->forward, false, ssh_last_error(t));
			conn_destroy(c);
			continue;
		}
		list_remove(&c->open_link);
		c->channel = ch;
		if (c->probe && !c->probe_done) {
			rc = probe_opened(c);
			if (rc < -1)
				return rc;
			continue;
		}
		if (c->fd < 0) {
			/* the client left while its open was in flight */
			c->state = CONN_CLOSING;
			if (libssh2_channel_free(ch) != LIBSSH2_ERROR_EAGAIN) {
				c->channel = NULL;
				conn_destroy(c);
			}
			continue;
		}
		c->state = CONN_OPEN;
		ev_io_start(t->loop, &c->rio);
		tunnel_target_result(t, c->forward, true, NULL);
	}
	return 0;
}

/* Channels the server opened for remote forwards: connect each to its local target. */
static int pump_remote_accepts(struct tunnel *t)
{
	struct link *l = &t->link;

	if (!l->remotes)
		return 0;
	for (size_t i = 0; i < t->n_forwards; i++) {
		struct remote_listener *r = &l->remotes[i];
		const struct forward_spec *f = &t->cfg->forwards[i];

		if (!r->listener)
			continue;
		for (;;) {
			LIBSSH2_CHANNEL *ch = libssh2_channel_forward_accept(r->listener);
			struct sockaddr_storage ss;
			socklen_t len;
			struct conn *c;
			int fd = -1, rc;

			if (!ch) {
				rc = libssh2_session_last_errno(l->session);
				if (rc == LIBSSH2_ERROR_EAGAIN || !ssh_error_fatal(rc))
					break;
				return rc;
			}
			/* The server's listener is as open as ours: the same cap on what it
			 * can make us hold (a conn, a descriptor, buffers). */
			if (t->stats[i].active >= t->cfg->max_connections) {
				forward_count_rejected(t, i, REJECT_MAX_CONNECTIONS);
				log_warn("tunnel %s: max_connections (%u) reached on remote %s:%u; "
					 "closing new channel",
					 t->cfg->name, t->cfg->max_connections, f->listen_host,
					 f->listen_port);
				libssh2_channel_free(ch);
				continue;
			}
			rc = net_resolve_numeric(f->target_host, f->target_port, &ss, &len);
			if (rc == 0)
				rc = net_connect_start((struct sockaddr *)&ss, len, &fd);
			if (rc < 0) {
				t->stats[i].open_failures++;
				log_warn("tunnel %s: remote forward target %s:%u: %s", t->cfg->name,
					 f->target_host, f->target_port, strerror(-rc));
				libssh2_channel_free(ch);
				continue;
			}
			c = conn_new(t, i, fd, CONN_CONNECTING);
			if (!c) {
				close(fd);
				libssh2_channel_free(ch);
				continue;
			}
			c->channel = ch;
			ev_io_start(t->loop, &c->wio);
		}
	}
	return 0;
}

/*
 * Reads whatever is waiting on the socket into libssh2 without taking any channel's data
 * (libssh2_poll spins the transport for a channel's session). Needed when no conn read
 * this pass, e.g. only a keepalive reply arrived. Returns false when there is no channel
 * or listener to do it through.
 */
bool forward_drain(struct tunnel *t)
{
	LIBSSH2_POLLFD pfd = {.type = LIBSSH2_POLLFD_CHANNEL, .events = LIBSSH2_POLLFD_POLLIN};
	struct list *pos;

	pfd.fd.channel = t->link.keepalive_channel;
	for (pos = t->conns.next; !pfd.fd.channel && pos != &t->conns; pos = pos->next) {
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->channel && c->state != CONN_CLOSING)
			pfd.fd.channel = c->channel;
	}
	for (size_t i = 0; !pfd.fd.channel && t->link.remotes && i < t->n_forwards; i++) {
		if (t->link.remotes[i].listener) {
			pfd.type = LIBSSH2_POLLFD_LISTENER;
			pfd.fd.listener = t->link.remotes[i].listener;
			break;
		}
	}
	if (!pfd.fd.channel && !pfd.fd.listener)
		return false;
	libssh2_poll(&pfd, 1, 0);
	return true;
}

int forward_pump(struct tunnel *t)
{
	struct list *pos, *tmp;
	int rc;

	rc = pump_opens(t);
	if (rc)
		return rc;
	rc = pump_remote_accepts(t);
	if (rc)
		return rc;
	list_for_each_safe(pos, tmp, &t->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state == CONN_CLOSING) {
			if (libssh2_channel_free(c->channel) != LIBSSH2_ERROR_EAGAIN) {
				c->channel = NULL;
				conn_destroy(c);
			}
			continue;
		}
		if (c->state != CONN_OPEN)
			continue;
		if (c->probe) {
			rc = probe_pump(c);
			if (rc < -1)
				return rc;
			continue;
		}
		if (buffer_len(&c->up) > 0 && tunnel_out_full(t)) {
			c->hwm_blocked = true; /* forward_resume_clients pumps again */
		} else if (buffer_len(&c->up) > 0 || (c->client_eof && !c->eof_sent)) {
			rc = buffer_len(&c->up) > 0 ? conn_flush_up(c) : conn_forward_client_eof(c);
			if (rc < -1)
				return rc;
			if (rc == -1)
				continue;
		}
		rc = conn_read_channel(c);
		if (rc < -1)
			return rc;
	}
	if (!t->link.rx_drained && !forward_drain(t))
		return 0;
	return 0;
}
