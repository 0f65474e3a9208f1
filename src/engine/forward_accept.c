#include "forward_accept.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "forward_data.h"
#include "forward_window.h"
#include "log.h"
#include "memacct.h"
#include "net.h"

/*
 * Clients of local forwards coming in: accepted in batches (paused while out of
 * descriptors), admitted only when the memory account (memacct.h) has room for what they
 * may make the daemon hold, held while the tunnel is not up (start_hold, down_hold) or
 * while the account has no room (memory wait), then queued for their channel's open.
 * Below the forwarder's lifecycle (forward.c), above the data path (forward_data.c).
 */

#define ACCEPT_BATCH 64
/* A refused client is logged at most this often per listener (the count is exact). */
#define REFUSAL_LOG_INTERVAL 10.0
/* A client the memory account has no room for waits this long for room, looking again
 * this often, before it is closed (counted as rejected, reason memory). */
#define MEMORY_WAIT	 5.0
#define MEMORY_WAIT_STEP 0.1

static void conn_hold_expired(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_memory_retry(struct conn *c);

/* A client's (or a remote forward target's) events: its bytes to and from the channel. */
void conn_watch(struct conn *c)
{
	ev_set_cb(&c->rio, conn_client_readable);
	ev_set_cb(&c->wio, conn_client_writable);
	ev_set_cb(&c->hold, conn_hold_expired);
}

/* Counts a client the forward closed without serving it. */
void forward_count_rejected(struct forwarder *fw, size_t forward, enum reject_reason why)
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

/* The first window of a new channel: small while the memory account sheds. */
static uint64_t first_window(void)
{
	return memacct_stage() >= MEMACCT_SHED ? FORWARD_WINDOW_SMALL : FORWARD_WINDOW;
}

/* Whether the memory account has room for `cost` more bytes held for a client of
 * `forward` (memacct_admit: past 7/8 of the limit, not for a forward that holds much). */
bool forward_admit(const struct forwarder *fw, size_t forward, uint64_t cost)
{
	return memacct_admit(memacct_used(), memacct_limit(), fw->stats[forward].memory, cost);
}

/*
 * A held client may queue for its channel's open once the account has room for its first
 * window and what it may hold beyond it (CONN_SLACK): then it is queued and true returned.
 * The window is reserved only when its open is sent (conn_reserve_open): opens go one at a
 * time, so a crowd in the queue (arrived during an outage, or in the backlog across a
 * restart) costs its sockets' receive queues alone, as held clients do, and a newcomer is
 * not refused for windows nobody uses yet.
 */
bool conn_admit_open(struct conn *c)
{
	struct forwarder *fw = c->fw;

	if (!forward_admit(fw, c->forward, first_window() + CONN_SLACK))
		return false;
	ev_timer_stop(fw->loop, &c->hold);
	c->memory_wait = false;
	c->state = CONN_OPENING;
	chanwin_init(&c->win, 0, 0);
	conn_account(c);
	list_insert_tail(&fw->open_queue, &c->open_link);
	return true;
}

bool conn_reserve_open(struct conn *c)
{
	uint64_t window = first_window();

	if (c->probe || c->win.window > 0)
		return true;
	if (!forward_admit(c->fw, c->forward, window + CONN_SLACK)) {
		list_remove(&c->open_link);
		conn_memory_wait(c);
		return false;
	}
	chanwin_init(&c->win, window, 0);
	c->memory_deadline = 0;
	conn_account(c);
	return true;
}

/* The tunnel is up but the account has no room for the client's window: it waits, held,
 * looking again every MEMORY_WAIT_STEP, up to MEMORY_WAIT (conn_memory_retry). */
void conn_memory_wait(struct conn *c)
{
	c->state = CONN_HELD;
	c->memory_wait = true;
	/* one wait per client: back from the head of the queue, it keeps its deadline */
	if (c->memory_deadline == 0)
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
		c->memory_deadline = 0;
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
	chanwin_init(&c->win, 0, 0); /* reserved when its channel may open */
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

void listener_watch(struct listener *li)
{
	ev_io_init(&li->io, forward_accept_cb, li->fd, EV_READ);
	li->io.data = li;
	ev_timer_init(&li->pause, forward_pause_cb, 0.1, 0.0);
	li->pause.data = li;
}
