#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "forward.h"
#include "log.h"
#include "memacct.h"
#include "net.h"
#include "probe.h"
#include "window.h"

/*
 * Client connections and their channels. Bytes move through one shared scratch buffer;
 * a conn holds memory only for bytes the other side has not taken yet, so idle
 * connections cost a struct, a libssh2 channel and the window granted to it. What they
 * hold is counted in the memory account (memacct.h), and a client comes in only when the
 * account has room for what it may make the daemon hold.
 */

#define IO_CHUNK     FORWARD_READ_CHUNK
#define ACCEPT_BATCH 64
/* A refused client is logged at most this often per listener (the count is exact). */
#define REFUSAL_LOG_INTERVAL 10.0
/* A client the memory account has no room for waits this long for room, looking again
 * this often, before it is closed (counted as rejected, reason memory). */
#define MEMORY_WAIT	 5.0
#define MEMORY_WAIT_STEP 0.1

static char scratch[IO_CHUNK];

static void conn_client_readable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_client_writable(struct ev_loop *loop, ev_io *w, int revents);
static void conn_hold_expired(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_memory_retry(struct conn *c);

/* A client's (or a remote forward target's) events: its bytes to and from the channel. */
static void conn_watch(struct conn *c)
{
	ev_set_cb(&c->rio, conn_client_readable);
	ev_set_cb(&c->wio, conn_client_writable);
	ev_set_cb(&c->hold, conn_hold_expired);
}

static const char *conn_label(const struct conn *c, char *buf, size_t size)
{
	const struct forward_spec *f = &c->fw->cfg->forwards[c->forward];

	if (f->kind == FORWARD_LOCAL)
		snprintf(buf, size, "%s:%u -> %s:%u", f->listen_host, f->listen_port,
			 f->target_host, f->target_port);
	else
		snprintf(buf, size, "remote %s:%u -> %s:%u", f->listen_host, f->listen_port,
			 f->target_host, f->target_port);
	return buf;
}

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

/* Counts a client the forward closed without serving it. */
static void forward_count_rejected(struct forwarder *fw, size_t forward, enum reject_reason why)
{
	fw->stats[forward].rejected[why]++;
}

/* A held client whose hold (start_hold or down_hold) ran out was turned away because the
 * tunnel is down, as it would have been at once with a hold of 0. */
static void conn_hold_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	if (c->memory_wait) {
		conn_memory_retry(c);
		return;
	}
	forward_count_rejected(c->fw, c->forward, REJECT_DOWN);
	log_info("tunnel %s: closing held client: tunnel still down after %s", c->fw->cfg->name,
		 c->fw->starting ? "start_hold" : "down_hold");
	conn_destroy(c);
}

/* Bounds the kernel's send queue of a client or target socket (conn.h). A failure only
 * costs the bound: the socket works either way. */
static void conn_set_sndbuf(struct conn *c, uint64_t bytes)
{
	int v = (int)bytes;

	if (bytes == c->sndbuf)
		return;
	setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	c->sndbuf = bytes;
}

/* The first window of a new channel: small while the memory account sheds. */
static uint64_t first_window(void)
{
	return memacct_stage() >= MEMACCT_SHED ? FORWARD_WINDOW_SMALL : FORWARD_WINDOW;
}

/* Whether the memory account has room for `cost` more bytes held for a client of
 * `forward` (memacct_admit: past 7/8 of the limit, not for a forward that holds much). */
static bool forward_admit(const struct forwarder *fw, size_t forward, uint64_t cost)
{
	return memacct_admit(memacct_used(), memacct_limit(), fw->stats[forward].memory, cost);
}

/*
 * A held client's channel may open once the account has room for its first window and what
 * it may hold beyond it (CONN_SLACK): then it is queued for its open and true returned.
 * Until then a held client costs its socket's receive queue alone: it is sent nothing and
 * has no channel, so a crowd that arrived during an outage, or in the backlog across a
 * restart, is not refused for memory it does not use.
 */
static bool conn_admit_open(struct conn *c)
{
	struct forwarder *fw = c->fw;
	uint64_t window = first_window();

	if (!forward_admit(fw, c->forward, window + CONN_SLACK))
		return false;
	ev_timer_stop(fw->loop, &c->hold);
	c->memory_wait = false;
	c->state = CONN_OPENING;
	c->window = c->window_base = window;
	conn_account(c);
	list_insert_tail(&fw->open_queue, &c->open_link);
	return true;
}

/* The tunnel is up but the account has no room for the client's window: it waits, held,
 * looking again every MEMORY_WAIT_STEP, up to MEMORY_WAIT (conn_memory_retry). */
static void conn_memory_wait(struct conn *c)
{
	c->state = CONN_HELD;
	c->memory_wait = true;
	c->memory_deadline = clock_now() + MEMORY_WAIT;
	ev_timer_stop(c->fw->loop, &c->hold);
	ev_timer_set(&c->hold, MEMORY_WAIT_STEP, MEMORY_WAIT_STEP);
	ev_timer_start(c->fw->loop, &c->hold);
	conn_account(c);
}

static void conn_memory_retry(struct conn *c)
{
	struct forwarder *fw = c->fw;

	if (!fw->up) {
		/* down meanwhile: held as any client of a tunnel that is down */
		c->memory_wait = false;
		ev_timer_stop(fw->loop, &c->hold);
		if (fw->cfg->down_hold_ms == 0) {
			conn_hold_expired(fw->loop, &c->hold, 0);
			return;
		}
		ev_timer_set(&c->hold, (double)fw->cfg->down_hold_ms / 1000.0, 0.0);
		ev_timer_start(fw->loop, &c->hold);
		return;
	}
	if (conn_admit_open(c)) {
		link_want_pump(fw->link);
		return;
	}
	if (clock_now() < c->memory_deadline)
		return;
	forward_count_rejected(fw, c->forward, REJECT_MEMORY);
	log_debug("tunnel %s: closing a client that waited %.0fs for room in the memory account",
		  fw->cfg->name, MEMORY_WAIT);
	conn_destroy(c);
}

/* Logs, at most every REFUSAL_LOG_INTERVAL per listener, that the account is full. */
static void listener_warn_memory(struct listener *li, const char *what)
{
	const struct tunnel_config *cfg = li->fw->cfg;
	double now = clock_now();

	if (now - li->last_memory_warn < REFUSAL_LOG_INTERVAL)
		return;
	li->last_memory_warn = now;
	log_warn("tunnel %s: memory account at %.1f of %.1f MiB (%s), this forward holding "
		 "%.1f MiB: new clients on %s:%u %s (repeats are not logged for 10s)",
		 cfg->name, (double)memacct_used() / (1 << 20), (double)memacct_limit() / (1 << 20),
		 memacct_stage_str(memacct_stage()),
		 (double)li->fw->stats[li->forward].memory / (1 << 20),
		 cfg->forwards[li->forward].listen_host, cfg->forwards[li->forward].listen_port,
		 what);
}

/* The client's address, for the channel open's originator fields. */
static void conn_set_peer(struct conn *c, const struct sockaddr_storage *ss)
{
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
}

/* How long a client that arrives while the tunnel is not up waits for it (conn.h). */
static uint64_t forward_hold_ms(const struct forwarder *fw)
{
	const struct tunnel_config *cfg = fw->cfg;

	if (fw->starting && cfg->start_hold_ms > cfg->down_hold_ms)
		return cfg->start_hold_ms;
	return cfg->down_hold_ms;
}

static void accept_one(struct listener *li, int fd, const struct sockaddr_storage *ss)
{
	struct forwarder *fw = li->fw;
	const struct tunnel_config *cfg = fw->cfg;
	struct forward_stats *st = &fw->stats[li->forward];
	struct conn *c;

	if (st->active >= cfg->max_connections) {
		forward_count_rejected(fw, li->forward, REJECT_MAX_CONNECTIONS);
		log_warn("tunnel %s: max_connections (%u) reached on %s:%u; closing new client",
			 cfg->name, cfg->max_connections, cfg->forwards[li->forward].listen_host,
			 cfg->forwards[li->forward].listen_port);
		close(fd);
		return;
	}
	if (!fw->up && forward_hold_ms(fw) == 0) {
		/* Fail fast: the application sees EOF now instead of hanging in connect. */
		forward_count_rejected(fw, li->forward, REJECT_DOWN);
		log_debug("tunnel %s: client closed: tunnel is not up", cfg->name);
		close(fd);
		return;
	}
	if (!forward_admit(fw, li->forward, conn_rcvbuf(fd))) {
		forward_count_rejected(fw, li->forward, REJECT_MEMORY);
		listener_warn_memory(li, "are closed (counted as rejected, reason memory)");
		close(fd);
		return;
	}
	net_set_nodelay(fd);
	c = conn_new(fw, li->forward, fd, CONN_HELD);
	if (!c) {
		close(fd);
		return;
	}
	conn_set_sndbuf(c, CLIENT_SNDBUF);
	c->window = c->window_base = 0; /* reserved when its channel may open */
	conn_watch(c);
	conn_set_peer(c, ss);
	if (!fw->up) {
		ev_timer_set(&c->hold, (double)forward_hold_ms(fw) / 1000.0, 0.0);
		ev_timer_start(fw->loop, &c->hold);
		conn_account(c);
	} else if (conn_admit_open(c)) {
		link_want_pump(fw->link);
	} else {
		listener_warn_memory(li, "wait up to 5s for room, then are closed (counted as "
					 "rejected, reason memory)");
		conn_memory_wait(c);
	}
}

static void forward_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
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
			double now = clock_now();

			if (now - li->last_warn >= 10.0) {
				log_warn(
				    "tunnel %s: accept: %s; pausing accepts for 100ms (repeats "
				    "are not logged for 10s)",
				    li->fw->cfg->name, strerror(errno));
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

static void forward_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *li = w->data;

	ev_io_start(loop, &li->io);
}

void forward_up(struct forwarder *fw)
{
	struct list *pos, *tmp;

	fw->up = true;
	fw->starting = false;
	/* A new session: its targets are measured afresh. */
	for (size_t i = 0; i < fw->n_forwards; i++) {
		fw->stats[i].target_state = TARGET_UNKNOWN;
		fw->stats[i].target_error[0] = '\0';
	}
	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state == CONN_HELD && !c->memory_wait && !conn_admit_open(c))
			conn_memory_wait(c);
	}
	if (!list_empty(&fw->open_queue))
		link_want_pump(fw->link);
	probe_start(fw);
}

void forward_attempt_failed(struct forwarder *fw)
{
	struct list *pos, *tmp;
	unsigned closed = 0;

	if (!fw->starting)
		return;
	fw->starting = false;
	if (fw->cfg->down_hold_ms > 0)
		return; /* they wait on, within the hold they were given */
	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state != CONN_HELD || c->memory_wait)
			continue;
		forward_count_rejected(fw, c->forward, REJECT_DOWN);
		conn_destroy(c);
		closed++;
	}
	if (closed)
		log_info("tunnel %s: closing %u held client%s: the first connection attempt failed",
			 fw->cfg->name, closed, closed == 1 ? "" : "s");
}

void forward_down(struct forwarder *fw)
{
	struct list *pos, *tmp;

	if (!fw->stats)
		return; /* never initialized: a tunnel that failed to be made */
	fw->up = false;
	probe_stop(fw);
	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->state == CONN_HELD)
			continue;
		c->channel = NULL; /* freed with the session */
		conn_destroy(c);
	}
	free(fw->remotes);
	fw->remotes = NULL;
	fw->remote_next = 0;
}

void forward_resume_clients(struct forwarder *fw)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &fw->conns)
	{
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->hwm_blocked) {
			c->hwm_blocked = false;
			if (c->state == CONN_OPEN && !c->client_eof && buffer_len(&c->up) == 0)
				ev_io_start(fw->loop, &c->rio);
			conn_account(c);
		}
	}
	link_want_pump(fw->link); /* for conns whose pending bytes waited */
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
	struct forwarder *fw = c->fw;
	size_t off = 0;

	while (off < len) {
		ssize_t n = libssh2_channel_write(c->channel, data + off, len - off);

		if (n > 0) {
			off += (size_t)n;
			fw->stats[c->forward].bytes_out += (uint64_t)n;
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
		ev_io_stop(fw->loop, &c->rio);
	}
	return 0;
}

/* Retries bytes the channel window refused earlier. */
static int conn_flush_up(struct conn *c)
{
	struct forwarder *fw = c->fw;

	while (buffer_len(&c->up) > 0) {
		ssize_t n =
		    libssh2_channel_write(c->channel, c->up.data + c->up.start, buffer_len(&c->up));
		if (n > 0) {
			buffer_consume(&c->up, (size_t)n);
			fw->stats[c->forward].bytes_out += (uint64_t)n;
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
		ev_io_start(fw->loop, &c->rio);
	return 0;
}

/* A client's channel of a local forward: its window is moletun's to grant (conn.h). */
static bool conn_window_own(const struct conn *c)
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
static int conn_window_flush(struct conn *c)
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

/* Bytes the client's socket holds that the client has not received (0 if unknown). */
static uint64_t client_queued(int fd)
{
	int n = 0;

	return ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0 ? (uint64_t)n : 0;
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
static int conn_window_grant(struct conn *c)
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
static int conn_window_update(struct conn *c)
{
	unsigned long queued = 0;

	c->committed = libssh2_channel_window_read_ex(c->channel, NULL, NULL) + c->window_pending;
	if (c->client_queued)
		c->client_queued = client_queued(c->fd); /* sampled at the last send */
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

/*
 * Moves channel data to the client until the channel is empty or the client is full; a
 * channel of a local forward then gets its window again (conn_window_update). Returns 0,
 * a fatal rc, or -1 if the conn was closed.
 */
static int conn_read_channel(struct conn *c)
{
	struct forwarder *fw = c->fw;
	bool own = conn_window_own(c);
	int rc = 0;

	while (!c->channel_eof && buffer_len(&c->down) == 0) {
		unsigned long open = 0;
		ssize_t n, w;

		if (own && c->window_pending) {
			rc = conn_window_flush(c);
			if (rc == LIBSSH2_ERROR_EAGAIN) {
				rc = 0; /* the pump comes back when the session moves */
				break;
			}
			if (rc < 0 && ssh_error_fatal(rc))
				return rc;
			rc = 0;
			c->window_pending = 0;
		}
		if (own)
			open = libssh2_channel_window_read_ex(c->channel, NULL, NULL);
		n = libssh2_channel_read(c->channel, scratch, sizeof(scratch));
		/* the channel opened with no window: libssh2 1.10 grants what this read asks for
		 * beyond what is open (at least its minimum adjustment) before it reads */
		if (own && open < sizeof(scratch))
			c->committed += sizeof(scratch) - open > LIBSSH2_CHANNEL_MINADJUST
					    ? sizeof(scratch) - open
					    : LIBSSH2_CHANNEL_MINADJUST;
		if (n == LIBSSH2_ERROR_EAGAIN) {
			if (own)
				rc = conn_window_update(c);
			break;
		}
		if (n < 0) {
			if (ssh_error_fatal((int)n))
				return (int)n;
			conn_close(c);
			return -1;
		}
		if (n == 0) {
			c->channel_eof = true;
			shutdown(c->fd, SHUT_WR);
			if (conn_finish_if_done(c))
				return -1;
			break;
		}
		fw->stats[c->forward].bytes_in += (uint64_t)n;
		c->committed -= c->committed > (uint64_t)n ? (uint64_t)n : c->committed;
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
			ev_io_start(fw->loop, &c->wio);
		}
		c->client_queued = client_queued(c->fd);
		c->round_sent += (uint64_t)w;
		if (own) {
			if (c->epoch_bytes == 0)
				c->epoch_start = loop_now(fw->loop);
			c->epoch_bytes += (uint64_t)n;
			/* a whole window received: judged now, not at the next pause */
			if (c->epoch_bytes >= c->window + c->client_queued)
				conn_window_judge(c);
			/* keep the window open while the client takes what waits: granting only
			 * once the channel ran dry would idle the path for a round trip */
			rc = conn_window_grant(c);
			if (rc)
				return rc;
		}
	}
	conn_account(c);
	return rc;
}

static void conn_client_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	struct forwarder *fw = c->fw;
	ssize_t n;
	int rc = 0;

	if (link_out_full(fw->link)) {
		c->hwm_blocked = true;
		ev_io_stop(loop, &c->rio);
		conn_account(c);
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
		link_session_error(fw->link, rc);
	else if (rc == 0)
		conn_account(c);
}

static void conn_client_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	struct forwarder *fw = c->fw;
	ssize_t n;
	int rc;

	if (c->state == CONN_CONNECTING) {
		ev_io_stop(loop, &c->wio);
		rc = net_connect_result(c->fd);
		if (rc < 0) {
			char label[600];

			fw->stats[c->forward].open_failures++;
			log_warn("tunnel %s: %s: connect to target: %s", fw->cfg->name,
				 conn_label(c, label, sizeof(label)), strerror(-rc));
			conn_close(c);
			return;
		}
		net_set_nodelay(c->fd);
		c->state = CONN_OPEN;
		ev_io_start(loop, &c->rio);
		conn_account(c);
		link_want_pump(fw->link);
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
	c->round_sent = n > 0 ? (uint64_t)n : 0;
	rc = conn_read_channel(c);
	if (rc < -1)
		link_session_error(fw->link, rc);
}

/*
 * Opens channels for queued clients, one at a time (libssh2 keeps open state per session;
 * the link's keepalives take turns with them). A client's channel opens with no receive
 * window: moletun grants it (conn.h). Returns 0 or a fatal rc.
 */
static int pump_opens(struct forwarder *fw)
{
	while (!list_empty(&fw->open_queue)) {
		struct conn *c = list_entry(fw->open_queue.next, struct conn, open_link);
		const struct forward_spec *f = &fw->cfg->forwards[c->forward];
		LIBSSH2_CHANNEL *ch;
		int rc;

		rc = link_direct_tcpip(fw->link, &ch, f->target_host, f->target_port, c->peer_host,
				       c->peer_port, c->probe ? FORWARD_PROBE_WINDOW : 0);
		if (!ch) {
			char label[600];

			if (rc == LIBSSH2_ERROR_EAGAIN)
				return 0;
			if (fw->link->io_error || ssh_error_fatal(rc))
				return rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
			list_remove(&c->open_link);
			if (c->probe) {
				if (!c->probe_done) {
					c->probe_done = true;
					fw->stats[c->forward].probe_failures++;
					forward_target(fw, c->forward, false,
						       link_last_error(fw->link));
				}
				conn_destroy(c);
				continue;
			}
			fw->stats[c->forward].open_failures++;
			log_warn("tunnel %s: %s: channel open failed: %s", fw->cfg->name,
				 conn_label(c, label, sizeof(label)), link_last_error(fw->link));
			/* a client's open is evidence on the target too */
			forward_target(fw, c->forward, false, link_last_error(fw->link));
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
		ev_io_start(fw->loop, &c->rio);
		forward_target(fw, c->forward, true, NULL);
		/* its first window, reserved since it was accepted */
		c->committed = 0;
		c->client_queued = 0;
		rc = conn_window_grant(c);
		conn_account(c);
		if (rc)
			return rc;
	}
	return 0;
}

/* Channels the server opened for remote forwards: connect each to its local target. */
static int pump_remote_accepts(struct forwarder *fw)
{
	if (!fw->remotes)
		return 0;
	for (size_t i = 0; i < fw->n_forwards; i++) {
		struct remote_listener *r = &fw->remotes[i];
		const struct forward_spec *f = &fw->cfg->forwards[i];

		if (!r->listener)
			continue;
		for (;;) {
			LIBSSH2_CHANNEL *ch = libssh2_channel_forward_accept(r->listener);
			struct sockaddr_storage ss;
			socklen_t len;
			struct conn *c;
			int fd = -1, rc;

			if (!ch) {
				rc = libssh2_session_last_errno(fw->link->session);
				if (rc == LIBSSH2_ERROR_EAGAIN || !ssh_error_fatal(rc))
					break;
				return rc;
			}
			/* The server's listener is as open as ours: the same cap on what it
			 * can make us hold (a conn, a descriptor, buffers). */
			if (fw->stats[i].active >= fw->cfg->max_connections) {
				forward_count_rejected(fw, i, REJECT_MAX_CONNECTIONS);
				log_warn("tunnel %s: max_connections (%u) reached on remote %s:%u; "
					 "closing new channel",
					 fw->cfg->name, fw->cfg->max_connections, f->listen_host,
					 f->listen_port);
				libssh2_channel_free(ch);
				continue;
			}
			if (!forward_admit(fw, i, LIBSSH2_CHANNEL_WINDOW_DEFAULT + CONN_SLACK)) {
				forward_count_rejected(fw, i, REJECT_MEMORY);
				log_warn(
				    "tunnel %s: memory account at %.1f of %.1f MiB (%s): closing "
				    "new channel on remote %s:%u",
				    fw->cfg->name, (double)memacct_used() / (1 << 20),
				    (double)memacct_limit() / (1 << 20),
				    memacct_stage_str(memacct_stage()), f->listen_host,
				    f->listen_port);
				libssh2_channel_free(ch);
				continue;
			}
			rc = net_resolve_numeric(f->target_host, f->target_port, &ss, &len);
			if (rc == 0)
				rc = net_connect_start((struct sockaddr *)&ss, len, &fd);
			if (rc < 0) {
				fw->stats[i].open_failures++;
				log_warn("tunnel %s: remote forward target %s:%u: %s",
					 fw->cfg->name, f->target_host, f->target_port,
					 strerror(-rc));
				libssh2_channel_free(ch);
				continue;
			}
			c = conn_new(fw, i, fd, CONN_CONNECTING);
			if (!c) {
				close(fd);
				libssh2_channel_free(ch);
				continue;
			}
			conn_watch(c);
			conn_set_sndbuf(c, CLIENT_SNDBUF);
			c->channel = ch;
			ev_io_start(fw->loop, &c->wio);
			conn_account(c);
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
bool forward_drain(struct forwarder *fw)
{
	LIBSSH2_POLLFD pfd = {.type = LIBSSH2_POLLFD_CHANNEL, .events = LIBSSH2_POLLFD_POLLIN};
	struct list *pos;

	if (!list_empty(&fw->open_queue))
		return true; /* the open in flight reads */
	pfd.fd.channel = NULL;
	for (pos = fw->conns.next; !pfd.fd.channel && pos != &fw->conns; pos = pos->next) {
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->channel && c->state != CONN_CLOSING)
			pfd.fd.channel = c->channel;
	}
	for (size_t i = 0; !pfd.fd.channel && fw->remotes && i < fw->n_forwards; i++) {
		if (fw->remotes[i].listener) {
			pfd.type = LIBSSH2_POLLFD_LISTENER;
			pfd.fd.listener = fw->remotes[i].listener;
			break;
		}
	}
	if (!pfd.fd.channel && !pfd.fd.listener)
		return false;
	libssh2_poll(&pfd, 1, 0);
	return true;
}

int forward_pump(struct forwarder *fw)
{
	struct list *pos, *tmp;
	int rc;

	rc = pump_opens(fw);
	if (rc)
		return rc;
	rc = pump_remote_accepts(fw);
	if (rc)
		return rc;
	list_for_each_safe(pos, tmp, &fw->conns)
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
		if (buffer_len(&c->up) > 0 && link_out_full(fw->link)) {
			c->hwm_blocked = true; /* forward_resume_clients pumps again */
		} else if (buffer_len(&c->up) > 0 || (c->client_eof && !c->eof_sent)) {
			rc = buffer_len(&c->up) > 0 ? conn_flush_up(c) : conn_forward_client_eof(c);
			if (rc < -1)
				return rc;
			if (rc == -1)
				continue;
		}
		c->round_sent = 0;
		rc = conn_read_channel(c);
		if (rc < -1)
			return rc;
	}
	return 0;
}

int forward_request_remotes(struct forwarder *fw)
{
	LIBSSH2_SESSION *session = fw->link->session;

	if (!fw->remotes) {
		fw->remotes = calloc(fw->n_forwards ? fw->n_forwards : 1, sizeof(*fw->remotes));
		if (!fw->remotes)
			return LIBSSH2_ERROR_ALLOC;
		fw->remote_next = 0;
	}
	for (; fw->remote_next < fw->n_forwards; fw->remote_next++) {
		const struct forward_spec *f = &fw->cfg->forwards[fw->remote_next];
		struct remote_listener *r = &fw->remotes[fw->remote_next];
		int bound = 0, rc;

		r->forward = fw->remote_next;
		if (f->kind != FORWARD_REMOTE)
			continue;
		r->listener = libssh2_channel_forward_listen_ex(session, f->listen_host,
								f->listen_port, &bound, 16);
		if (r->listener)
			continue;
		rc = libssh2_session_last_errno(session);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (fw->link->io_error ||
		    (ssh_error_fatal(rc) && rc != LIBSSH2_ERROR_REQUEST_DENIED))
			return rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
		r->failed = true;
		fw->stats[fw->remote_next].open_failures++;
		log_err("tunnel %s: server refused remote forward %s:%u -> %s:%u (%s)",
			fw->cfg->name, f->listen_host, f->listen_port, f->target_host,
			f->target_port, link_last_error(fw->link));
	}
	return 1;
}

size_t forward_allowance(const struct forwarder *fw)
{
	uint64_t owed = 0;

	/* twice what its conns hold: libssh2 keeps each packet whole, with its headers */
	for (size_t i = 0; i < fw->n_forwards; i++)
		owed += 2 * fw->stats[i].memory;
	return owed > SIZE_MAX ? SIZE_MAX : (size_t)owed;
}

void forward_windows(const struct forwarder *fw, size_t forward, uint64_t *ret_largest,
		     uint64_t *ret_total)
{
	const struct list *pos;
	uint64_t largest = 0, total = 0;

	for (pos = fw->conns.next; pos != &fw->conns; pos = pos->next) {
		const struct conn *c = list_entry(pos, struct conn, link);
		uint64_t w;

		if (c->forward != forward || c->probe || !c->channel || c->state == CONN_CLOSING)
			continue;
		w = fw->cfg->forwards[forward].kind == FORWARD_LOCAL
			? c->window
			: LIBSSH2_CHANNEL_WINDOW_DEFAULT;
		total += w;
		if (w > largest)
			largest = w;
	}
	*ret_largest = largest;
	*ret_total = total;
}

static int listener_open(struct forwarder *fw, const struct forward_spec *f)
{
	if (fw->listen)
		return fw->listen->open(fw->listen->userdata, f->listen_host, f->listen_port);
	return net_listen(f->listen_host, f->listen_port);
}

static void listener_close(struct forwarder *fw, int fd)
{
	if (fw->listen)
		fw->listen->close(fw->listen->userdata, fd);
	else
		close(fd);
}

int forward_init(struct forwarder *fw, struct ev_loop *loop, const struct tunnel_config *cfg,
		 struct link *link, const struct listen_ops *listen, const struct forward_ops *ops,
		 char *err, size_t err_size)
{
	memset(fw, 0, sizeof(*fw));
	fw->loop = loop;
	fw->cfg = cfg;
	fw->link = link;
	fw->listen = listen;
	fw->ops = *ops;
	fw->starting = true;
	fw->n_forwards = cfg->n_forwards;
	list_init(&fw->conns);
	list_init(&fw->open_queue);
	ev_init(&fw->probe_timer, NULL);
	fw->stats = calloc(cfg->n_forwards ? cfg->n_forwards : 1, sizeof(*fw->stats));
	fw->listeners = calloc(cfg->n_forwards ? cfg->n_forwards : 1, sizeof(*fw->listeners));
	if (!fw->stats || !fw->listeners) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->n_forwards; i++)
		fw->listeners[i].fd = -1;
	for (size_t i = 0; i < cfg->n_forwards; i++) {
		const struct forward_spec *f = &cfg->forwards[i];
		struct listener *li = &fw->listeners[i];

		li->fw = fw;
		li->forward = i;
		if (f->kind != FORWARD_LOCAL)
			continue;
		li->fd = listener_open(fw, f);
		if (li->fd < 0) {
			int r = li->fd;

			snprintf(err, err_size, "cannot listen on %s:%u: %s", f->listen_host,
				 f->listen_port, strerror(-r));
			li->fd = -1;
			return r;
		}
		ev_io_init(&li->io, forward_accept_cb, li->fd, EV_READ);
		li->io.data = li;
		ev_timer_init(&li->pause, forward_pause_cb, 0.1, 0.0);
		li->pause.data = li;
	}
	return 0;
}

void forward_finish(struct forwarder *fw)
{
	struct list *pos, *tmp;

	if (!fw->stats)
		return;
	forward_down(fw);
	list_for_each_safe(pos, tmp, &fw->conns) conn_destroy(list_entry(pos, struct conn, link));
	for (size_t i = 0; fw->listeners && i < fw->n_forwards; i++) {
		struct listener *li = &fw->listeners[i];

		if (li->fd < 0)
			continue;
		ev_io_stop(fw->loop, &li->io);
		ev_timer_stop(fw->loop, &li->pause);
		listener_close(fw, li->fd);
	}
	free(fw->listeners);
	free(fw->stats);
	fw->listeners = NULL;
	fw->stats = NULL;
}

void forward_set_config(struct forwarder *fw, const struct tunnel_config *cfg)
{
	fw->cfg = cfg;
}

void forward_start(struct forwarder *fw)
{
	for (size_t i = 0; i < fw->n_forwards; i++)
		if (fw->listeners[i].fd >= 0)
			ev_io_start(fw->loop, &fw->listeners[i].io);
}
