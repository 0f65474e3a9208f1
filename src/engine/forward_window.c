#include "forward_window.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "chanwin.h"

/*
 * The receive windows of a forward's channels (conn.h): a local client's and a remote
 * forward target's, granted by the window rule through chanwin.c, and the client socket's
 * send queue that follows a grown window. The bottom of the forward layer: it calls nothing
 * of the files above it.
 */

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

/* A client's or a remote forward target's channel: its window is moletun's to grow. */
bool conn_window_own(const struct conn *c)
{
	return !c->probe;
}

/* What the channel's window starts at without moletun: a local forward's first grant, a
 * remote forward's window that libssh2 keeps open. Growth beyond it counts in the budget. */
static uint64_t conn_window_floor(const struct conn *c)
{
	return c->fw->cfg->forwards[c->forward].kind == FORWARD_LOCAL
		   ? FORWARD_WINDOW
		   : LIBSSH2_CHANNEL_WINDOW_DEFAULT;
}

/* What was read for the client and waits for it, in moletun and in its socket. */
static uint64_t conn_waiting(const struct conn *c)
{
	return c->client_queued + buffer_len(&c->down);
}

int conn_window_grant(struct conn *c)
{
	return chanwin_grant(c->channel, &c->win, conn_waiting(c));
}

/*
 * Judges the channel's epoch by the window rule (chanwin.c) and sizes the client socket's
 * send queue and the channel's share of the budget after the window.
 */
static void conn_window_judge(struct conn *c)
{
	struct forwarder *fw = c->fw;
	uint64_t max = fw->cfg->channel_window_max, floor = conn_window_floor(c);
	/* of what its socket holds, what was sent before this round is what the client left
	 * behind (window.h) */
	struct chanwin_view v = {
	    .now = chanwin_now(fw->loop),
	    .rtt = fw->ops.rtt ? fw->ops.rtt(fw->ops.userdata) : 0,
	    .max = max > floor ? max : 0,
	    .unreceived = c->client_queued,
	    .behind = c->client_queued > c->round_sent ? c->client_queued - c->round_sent : 0,
	    .backlog = buffer_len(&c->down) > 0,
	};
	uint64_t held, send_queue;

	chanwin_judge(&c->win, &v);
	/* a stream whose window grew gets a send queue in proportion, so that a client a
	 * moment late does not idle the path; it counts in the account like the window */
	send_queue = c->win.window / 4;
	conn_set_sndbuf(c, send_queue < CLIENT_SNDBUF	    ? CLIENT_SNDBUF
			   : send_queue > CLIENT_SNDBUF_MAX ? CLIENT_SNDBUF_MAX
							    : send_queue);
	held = chanwin_held(&c->win);
	conn_set_window_charge(c, held > floor ? held - floor : 0);
}

/*
 * Nothing of the channel waits unread (a read said EAGAIN) and its client kept up: judges
 * the epoch and grants the window again. 0, or a fatal libssh2 code.
 */
int conn_window_update(struct conn *c)
{
	chanwin_sync(c->channel, &c->win);
	if (c->client_queued)
		c->client_queued = conn_client_queued(c->fd); /* sampled at the last send */
	conn_window_judge(c);
	return chanwin_regrant(c->channel, &c->win, conn_waiting(c));
}

/* `n` bytes were read for the client: counted in the epoch, judged once a whole window came,
 * and the window granted again. 0 or a fatal code. */
int conn_window_received(struct conn *c, uint64_t n)
{
	/* a whole window received: judged now, not at the next pause */
	if (chanwin_count(&c->win, n, c->client_queued, c->fw->loop))
		conn_window_judge(c);
	/* keep the window open while the client takes what waits: granting only once the
	 * channel ran dry would idle the path for a round trip */
	return conn_window_grant(c);
}
