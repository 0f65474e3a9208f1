#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "memacct.h"
#include "window.h"

/*
 * A conn's life and the per-forward records, below the forward layer's files (forward*.c)
 * and the probes (probe.c), which both make conns.
 */

struct conn *conn_new(struct forwarder *fw, size_t forward, int fd, enum conn_state state)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fw = fw;
	c->forward = forward;
	c->fd = fd;
	c->state = state;
	chanwin_init(&c->win, FORWARD_WINDOW, 0);
	list_init(&c->open_link);
	/* callbacks are the caller's: a client's pumps, a probe's timeout */
	ev_io_init(&c->rio, NULL, fd, EV_READ);
	ev_io_init(&c->wio, NULL, fd, EV_WRITE);
	ev_timer_init(&c->hold, NULL, 0.0, 0.0);
	c->rio.data = c->wio.data = c->hold.data = c;
	list_insert_tail(&fw->conns, &c->link);
	if (fd >= 0) {
		fw->stats[forward].active++;
		fw->stats[forward].connections_total++;
	}
	return c;
}

void conn_set_window_charge(struct conn *c, uint64_t charge)
{
	struct forward_stats *st = &c->fw->stats[c->forward];

	st->window_charge = st->window_charge - c->window_charge + charge;
	window_budget_charge(&c->window_charge, charge);
}

uint64_t conn_rcvbuf(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len) < 0 || v <= 0)
		return 6 * 1024 * 1024;
	return (uint64_t)v;
}

void conn_account(struct conn *c)
{
	struct forward_stats *st = &c->fw->stats[c->forward];
	uint64_t window = 0, socket = 0, buffers = 0, held;

	if (c->probe)
		return; /* a few bytes of window, once per probe_interval */
	if (c->state == CONN_OPENING)
		window = c->win.window; /* reserved for its open */
	else if (c->state != CONN_CLOSING && c->state != CONN_HELD && c->channel)
		window = chanwin_open(c->channel, &c->win);
	if (c->fd >= 0 && (c->state == CONN_HELD || c->state == CONN_OPENING)) {
		/* nothing is sent to it and nothing read from it yet: its receive queue alone */
		if (!c->rcvbuf_paused)
			c->rcvbuf_paused = conn_rcvbuf(c->fd);
		socket = c->rcvbuf_paused;
	} else if (c->fd >= 0) {
		/* the send queue and the unsent read at their bounds (CONN_SLACK); the receive
		 * queue at its size while the client is not read: it grows only while read */
		socket = 2 * (c->sndbuf ? c->sndbuf : CLIENT_SNDBUF);
		if (!ev_is_active(&c->rio) && !c->client_eof) {
			if (!c->rcvbuf_paused)
				c->rcvbuf_paused = conn_rcvbuf(c->fd);
			socket += c->rcvbuf_paused;
		} else {
			c->rcvbuf_paused = 0;
		}
		buffers = c->up.cap +
			  (c->down.cap > FORWARD_READ_CHUNK ? c->down.cap : FORWARD_READ_CHUNK);
	}
	memacct_charge(MEMACCT_WINDOW, &c->acct_window, window);
	memacct_charge(MEMACCT_BUFFER, &c->acct_buffer, buffers);
	memacct_charge(MEMACCT_SOCKET, &c->acct_socket, socket);
	/* what waits in the session for it is in `committed`, not in the open window */
	held = (c->win.committed > window ? c->win.committed : window) + buffers + socket;
	if (c->state == CONN_CLOSING)
		held = 0;
	st->memory = st->memory - c->acct_held + held;
	c->acct_held = held;
}

/* Closes the client side: no more events, no more bytes, not counted as active. */
static void conn_drop_client(struct conn *c)
{
	struct forwarder *fw = c->fw;

	ev_io_stop(fw->loop, &c->rio);
	ev_io_stop(fw->loop, &c->wio);
	ev_timer_stop(fw->loop, &c->hold);
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
		fw->stats[c->forward].active--;
	}
	buffer_finish(&c->up);
	buffer_finish(&c->down);
}

/* Frees the conn now. The channel, if any, must already be freed or be owned by a session
 * that is about to be freed. */
void conn_destroy(struct conn *c)
{
	conn_set_window_charge(c, 0); /* its window dies with the channel */
	conn_drop_client(c);
	c->state = CONN_CLOSING;
	c->channel = NULL;
	conn_account(c);
	list_remove(&c->open_link);
	list_remove(&c->link);
	free(c);
}

/* The client side is finished: close it and release the channel without waiting on the
 * network (libssh2 waits for the peer's CLOSE; the pump retries until it is freed). */
void conn_close(struct conn *c)
{
	struct forwarder *fw = c->fw;

	conn_drop_client(c);
	if (c->state == CONN_OPENING && fw->open_queue.next != &c->open_link) {
		conn_destroy(c);
		return;
	}
	if (c->state == CONN_OPENING) {
		conn_account(c); /* its window stays reserved until the channel is freed */
		return; /* its open is in flight: the pump frees the channel when it lands */
	}
	c->state = CONN_CLOSING;
	conn_account(c);
	if (!c->channel || libssh2_channel_free(c->channel) != LIBSSH2_ERROR_EAGAIN) {
		c->channel = NULL;
		conn_destroy(c);
	}
}

/* Records what a probe or a client's open found; tells the layer above when it changed. */
void forward_target(struct forwarder *fw, size_t forward, bool reachable, const char *why)
{
	struct forward_stats *st = &fw->stats[forward];
	const struct forward_spec *f = &fw->cfg->forwards[forward];
	enum target_state s = reachable ? TARGET_REACHABLE : TARGET_UNREACHABLE;
	bool changed = st->target_state != s;

	if (!reachable && strncmp(st->target_error, why, sizeof(st->target_error) - 1) != 0)
		changed = true;
	if (st->target_state != s)
		log_msg(reachable ? LOG_NOTICE : LOG_WARNING, "tunnel %s: target %s:%u %s%s%s%s",
			fw->cfg->name, f->target_host, f->target_port,
			reachable ? "reachable" : "unreachable", reachable ? "" : " (",
			reachable ? "" : why, reachable ? "" : ")");
	st->target_state = s;
	snprintf(st->target_error, sizeof(st->target_error), "%s", reachable ? "" : why);
	if (changed && fw->ops.on_target)
		fw->ops.on_target(fw->ops.userdata, forward, reachable, why);
}
