#include "forward_window.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "clock.h"
#include "memacct.h"
#include "window.h"

/*
 * The receive windows of local_forward channels, granted by moletun (conn.h) by the
 * window rule (window.h), and the client socket's send queue that follows a grown window.
 * The bottom of the forward layer: it calls nothing of the files above it.
 */

/*
 * When the loop woke up for the events at hand, on the monotonic clock: a window's epoch
 * measures the network, not the time the loop took to reach this channel among hundreds
 * (which would keep windows from growing on a busy daemon). ev_now() is that instant on
 * the wall clock; only the moment since then is taken from it, bounded, so a step of the
 * wall clock moves it by at most a second once.
 */
static double loop_now(struct ev_loop *loop)
{
	double since = ev_time() - ev_now(loop);

	return clock_now() - (since > 0 && since < 1.0 ? since : 0);
}

/* Bounds the kernel's send queue of a client or target socket (conn.h). A failure only
 * costs the bound: the socket works either way. */
void conn_set_sndbuf(struct conn *c, uint64_t bytes)
{
	int v = (int)bytes;

	if (bytes == c->sndbuf)
		return;
	setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	c->sndbuf = bytes;
}

/* Bytes the client's socket holds that the client has not received (0 if unknown). */
uint64_t conn_client_queued(int fd)
{
	int n = 0;

	return ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0 ? (uint64_t)n : 0;
}

/* A client's channel of a local forward: its window is moletun's to grant (conn.h). */
bool conn_window_own(const struct conn *c)
{
	return !c->probe && c->fw->cfg->forwards[c->forward].kind == FORWARD_LOCAL;
}

static bool conn_window_adaptive(const struct conn *c)
{
	return conn_window_own(c) && c->fw->cfg->channel_window_max > FORWARD_WINDOW;
}

/*
 * Sends a grant that libssh2 could not send yet. It must go before anything else adjusts
 * this channel's window: libssh2 1.10 keeps the unsent packet and sends it on the next
 * adjust, but adds that call's amount to its count. 0, EAGAIN or a libssh2 error.
 */
int conn_window_flush(struct conn *c)
{
	unsigned int open;
	int rc;

	if (!c->window_pending)
		return 0;
	rc = libssh2_channel_receive_window_adjust2(c->channel, c->window_pending, 1, &open);
	if (rc == 0)
		c->window_pending = 0;
	return rc;
}

/*
 * What may be granted beyond what is committed and what waits for the client in moletun
 * and in its socket: what the server may make moletun hold for a client stays within its
 * window (and CONN_SLACK). A window that grew (its client kept up with it) may also keep
 * a window's worth waiting for the client, so that a client a moment late does not idle
 * the path for a round trip: such a channel holds up to twice its window.
 */
static uint64_t conn_window_room(const struct conn *c)
{
	uint64_t used = c->committed + c->client_queued + buffer_len(&c->down);
	uint64_t limit = c->window > c->window_base ? 2 * c->window : c->window;

	return used < limit ? limit - used : 0;
}

/* Whether the room is worth a grant: a quarter of the window, as libssh2 tops up its own
 * (fewer adjust packets); smaller top-ups are left to libssh2's read (at most one read's
 * worth, see conn.h). */
static bool conn_window_room_worth(const struct conn *c, uint64_t room)
{
	return !c->window_pending && room >= c->window / 4 && room >= LIBSSH2_CHANNEL_MINADJUST;
}

/* Grants the room, counted as committed at once (a grant that could not be sent yet goes
 * first at the next read). 0 or a fatal code. */
int conn_window_grant(struct conn *c)
{
	uint64_t room = conn_window_room(c);
	int rc;

	if (!conn_window_room_worth(c, room))
		return 0;
	c->window_pending = (uint32_t)room;
	c->committed += room;
	rc = conn_window_flush(c);
	if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN && ssh_error_fatal(rc))
		return rc;
	return 0;
}

/*
 * Judges the channel's epoch by the window policy (window.h) and chooses the window to
 * keep. While the memory account sheds, a window grown beyond its floor goes back to it:
 * the fattest channels are granted nothing until what they were granted is read, so their
 * servers stop sending.
 */
static void conn_window_judge(struct conn *c)
{
	struct forwarder *fw = c->fw;
	enum memacct_stage stage = memacct_stage();
	/* the client received what was read, but what its socket still holds; of that, what
	 * was sent before this round is what the client left behind (window.h) */
	uint64_t received =
	    c->epoch_bytes > c->client_queued ? c->epoch_bytes - c->client_queued : 0;
	uint64_t backlog = c->client_queued > c->round_sent ? c->client_queued - c->round_sent : 0;
	struct window_input in;
	uint64_t next, held, send_queue;

	if (stage >= MEMACCT_SHED && c->window > c->window_base) {
		c->window = c->window_base;
		c->epoch_bytes = 0;
	} else if (conn_window_adaptive(c) && c->epoch_bytes > 0) {
		in = (struct window_input){
		    .consumed = received,
		    .elapsed = loop_now(fw->loop) - c->epoch_start,
		    .rtt = fw->ops.rtt ? fw->ops.rtt(fw->ops.userdata) : 0,
		    .window = c->window,
		    .base = c->window_base,
		    .max = fw->cfg->channel_window_max,
		    /* a grown window costs the budget twice (conn_window_room) */
		    .budget_left = window_budget_left() / 2,
		    .backlog = buffer_len(&c->down) > 0,
		    .client_queued = backlog,
		    .memory_tight = stage >= MEMACCT_NO_GROWTH,
		};
		next = window_next(&in);
		if (next != c->window || received >= c->window)
			c->epoch_bytes = 0;
		c->window = next;
	}
	/* a stream whose window grew gets a send queue in proportion, so that a client a
	 * moment late does not idle the path; it counts in the account like the window */
	send_queue = c->window / 4;
	conn_set_sndbuf(c, send_queue < CLIENT_SNDBUF	    ? CLIENT_SNDBUF
			   : send_queue > CLIENT_SNDBUF_MAX ? CLIENT_SNDBUF_MAX
							    : send_queue);
	/* what it may hold beyond the first window (conn_window_room) */
	held = c->window > c->window_base ? 2 * c->window : c->window;
	if (c->committed > held)
		held = c->committed;
	conn_set_window_charge(c, held > FORWARD_WINDOW ? held - FORWARD_WINDOW : 0);
}

/*
 * Nothing of the channel waits unread (a read said EAGAIN) and its client kept up: judges
 * the epoch and grants the window again. 0, or a fatal libssh2 code.
 */
int conn_window_update(struct conn *c)
{
	unsigned long queued = 0;

	c->committed = libssh2_channel_window_read_ex(c->channel, NULL, NULL) + c->window_pending;
	if (c->client_queued)
		c->client_queued = conn_client_queued(c->fd); /* sampled at the last send */
	conn_window_judge(c);
	if (!conn_window_room_worth(c, conn_window_room(c)))
		return 0;
	/* about to grant: what waits unread counts too (nothing, unless the read stopped at a
	 * window adjust libssh2 could not send yet); a walk of the session's packets, so only
	 * then */
	libssh2_channel_window_read_ex(c->channel, &queued, NULL);
	c->committed += queued;
	return conn_window_grant(c);
}

/* `n` bytes were read for the client: counted in the epoch, judged once a whole window came,
 * and the window granted again. 0 or a fatal code. */
int conn_window_received(struct conn *c, uint64_t n)
{
	if (c->epoch_bytes == 0)
		c->epoch_start = loop_now(c->fw->loop);
	c->epoch_bytes += n;
	/* a whole window received: judged now, not at the next pause */
	if (c->epoch_bytes >= c->window + c->client_queued)
		conn_window_judge(c);
	/* keep the window open while the client takes what waits: granting only once the
	 * channel ran dry would idle the path for a round trip */
	return conn_window_grant(c);
}
