#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "probe.h"

/*
 * Target probes: every probe_interval, one direct-tcpip channel per local forward through
 * the live session, queued with the clients' opens (one open in flight per session). A
 * probe is a conn without a client: it never counts as a connection, and its timer is
 * the conn's hold timer. tcp: the open succeeding means the server connected to the
 * target. postgres: also PostgreSQL's SSLRequest, answered with one byte 'S' or 'N';
 * closing after that answer (or after a bare open) leaves no line in PostgreSQL's log.
 */

/* Int32 length 8, Int32 80877103 (1234 << 16 | 5679), network byte order. */
static const char ssl_request[8] = {0, 0, 0, 8, 0x04, (char)0xd2, 0x16, 0x2f};

static bool probe_in_flight(struct forwarder *fw, size_t forward)
{
	for (struct list *pos = fw->conns.next; pos != &fw->conns; pos = pos->next) {
		struct conn *c = list_entry(pos, struct conn, link);

		if (c->probe && c->forward == forward && !c->probe_done)
			return true;
	}
	return false;
}

/* Records the outcome once; the conn is closed by the caller. */
static void probe_record(struct conn *c, bool reachable, const char *why)
{
	struct forwarder *fw = c->fw;
	struct forward_stats *st = &fw->stats[c->forward];

	if (c->probe_done)
		return;
	c->probe_done = true;
	ev_timer_stop(fw->loop, &c->hold);
	if (reachable) {
		st->probe_rtt = clock_now() - c->probe_started;
		st->probe_rtt_measured = true;
	} else {
		st->probe_failures++;
	}
	forward_target(fw, c->forward, reachable, why);
}

/* Releases the probe's channel without waiting on the network. Returns CONN_GONE: the conn is
 * gone or closing. */
static int probe_close(struct conn *c)
{
	ev_timer_stop(c->fw->loop, &c->hold);
	c->state = CONN_CLOSING;
	if (libssh2_channel_free(c->channel) != LIBSSH2_ERROR_EAGAIN) {
		c->channel = NULL;
		conn_destroy(c);
	}
	return CONN_GONE;
}

static void probe_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	struct forwarder *fw = c->fw;
	char why[96];

	snprintf(why, sizeof(why), "no answer to the probe within %.1fs",
		 (double)fw->cfg->probe_timeout_ms / 1000.0);
	probe_record(c, false, why);
	if (c->state == CONN_OPEN)
		probe_close(c);
	else
		conn_close(c); /* an open in flight is freed by the pump when it lands */
}

static void probe_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct forwarder *fw = w->data;
	bool queued = false;

	if (!fw->up)
		return;
	for (size_t i = 0; i < fw->n_forwards; i++) {
		struct conn *c;

		if (fw->cfg->forwards[i].kind != FORWARD_LOCAL || probe_in_flight(fw, i))
			continue;
		c = conn_new(fw, i, -1, CONN_OPENING);
		if (!c)
			return;
		c->probe = true;
		c->probe_started = clock_now();
		snprintf(c->peer_host, sizeof(c->peer_host), "127.0.0.1");
		ev_set_cb(&c->hold, probe_timeout);
		ev_timer_set(&c->hold, (double)fw->cfg->probe_timeout_ms / 1000.0, 0.);
		ev_timer_start(loop, &c->hold);
		list_insert_tail(&fw->open_queue, &c->open_link);
		queued = true;
	}
	if (queued)
		link_want_pump(fw->link);
}

void probe_start(struct forwarder *fw)
{
	double interval = (double)fw->cfg->probe_interval_ms / 1000.0;

	if (fw->cfg->probe == PROBE_NONE || fw->cfg->probe_interval_ms == 0)
		return;
	/* the first right away: "up" is worth something only once a target answered */
	ev_timer_stop(fw->loop, &fw->probe_timer);
	ev_timer_init(&fw->probe_timer, probe_tick, 0.001, interval);
	fw->probe_timer.data = fw;
	ev_timer_start(fw->loop, &fw->probe_timer);
}

void probe_stop(struct forwarder *fw)
{
	ev_timer_stop(fw->loop, &fw->probe_timer);
}

int probe_opened(struct conn *c)
{
	ssize_t n;

	if (c->fw->cfg->probe != PROBE_POSTGRES) {
		probe_record(c, true, NULL);
		return probe_close(c);
	}
	n = libssh2_channel_write(c->channel, ssl_request, sizeof(ssl_request));
	if (n == (ssize_t)sizeof(ssl_request)) {
		c->state = CONN_OPEN;
		return 0;
	}
	if (n < 0 && n != LIBSSH2_ERROR_EAGAIN && ssh_error_fatal((int)n))
		return (int)n;
	probe_record(c, false, "cannot send the SSLRequest");
	return probe_close(c);
}

int probe_pump(struct conn *c)
{
	char answer, why[96];
	ssize_t n = libssh2_channel_read(c->channel, &answer, 1);

	if (n == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (n < 0 && ssh_error_fatal((int)n))
		return (int)n;
	if (n == 1 && (answer == 'S' || answer == 'N')) {
		probe_record(c, true, NULL);
	} else {
		if (n == 1)
			snprintf(why, sizeof(why), "not PostgreSQL: answered 0x%02x to SSLRequest",
				 (unsigned char)answer);
		else
			snprintf(why, sizeof(why),
				 "closed without answering PostgreSQL's SSLRequest");
		probe_record(c, false, why);
	}
	return probe_close(c);
}
