#include "path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memacct.h"
#include "window.h"

/* The first window of a channel between hops, and the floor of its window rule: what a
 * hop's session may hold for the link above while that link reads nothing. Growth beyond
 * it counts in the window budget. */
#define JUMP_WINDOW LIBSSH2_CHANNEL_WINDOW_DEFAULT

static void hop_on_ready(void *userdata);
static void hop_on_fail(void *userdata, enum link_failure why, const char *reason);
static int hop_on_input(void *userdata);
static void hop_on_drained(void *userdata);
static void hop_on_rtt(void *userdata, double seconds);
static size_t hop_allowance(void *userdata);
static bool hop_drain(void *userdata);

/* Gives back the hop's shares of the budget and of the account (its channel is gone). */
static void hop_release(struct path_hop *h)
{
	window_budget_charge(&h->window_charge, 0);
	memacct_charge(MEMACCT_WINDOW, &h->acct_window, 0);
	memacct_charge(MEMACCT_BUFFER, &h->acct_buffer, 0);
}

static struct link_ops hop_ops(struct path *p, size_t i)
{
	hop_release(&p->hops[i]);
	p->hops[i] = (struct path_hop){.path = p, .index = i};
	return (struct link_ops){
	    .userdata = &p->hops[i],
	    .on_ready = hop_on_ready,
	    .on_fail = hop_on_fail,
	    .on_input = hop_on_input,
	    .on_drained = hop_on_drained,
	    .on_rtt = hop_on_rtt,
	    .allowance = hop_allowance,
	    .drain = hop_drain,
	};
}

/* The ops of link i: a hop's, or the destination's. */
static struct link_ops ops_of(struct path *p, size_t i)
{
	return i < p->n_hops ? hop_ops(p, i) : p->final_ops;
}

static void hop_on_ready(void *userdata)
{
	struct path_hop *h = userdata;

	h->path->opening[h->index] = true;
	link_want_pump(&h->path->links[h->index]);
}

static void hop_on_fail(void *userdata, enum link_failure why, const char *reason)
{
	struct path_hop *h = userdata;
	struct path *p = h->path;
	const struct link_params *via = &p->params[h->index];
	char text[256];

	/* cut if need be: the reason says the most at its start */
	if (snprintf(text, sizeof(text), "via %s:%u: %s", via->host, via->port, reason) >=
	    (int)sizeof(text))
		text[sizeof(text) - 1] = '\0';
	p->final_ops.on_fail(p->final_ops.userdata, why, text);
}

/* Opens the channel to the next hop's sshd, then starts that hop's session over it. */
static int hop_open_next(struct path *p, size_t i)
{
	const struct link_params *next = &p->params[i + 1];
	struct link *l = &p->links[i];
	struct link_ops ops;
	LIBSSH2_CHANNEL *ch;
	int rc;

	rc = link_direct_tcpip(l, &ch, next->host, next->port, "127.0.0.1", 0, 0);
	if (!ch) {
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (l->io_error || ssh_error_fatal(rc))
			return rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
		link_fail(l, false, "cannot reach %s:%u from here: %s", next->host, next->port,
			  link_last_error(l));
		return 0;
	}
	p->channels[i] = ch;
	p->opening[i] = false;
	/* no window yet: the path grants it (the first one at once) */
	chanwin_init(&p->hops[i].win, JUMP_WINDOW, 0);
	rc = chanwin_grant(ch, &p->hops[i].win, 0);
	if (rc)
		return rc;
	ops = ops_of(p, i + 1);
	link_open_stream(&p->links[i + 1], p->loop, next, &ops, l, ch);
	return 0;
}

/* Judges the epoch of hop i's channel by the window rule: its consumer is the link above,
 * which keeps up when it took everything read for it. Then sizes its share of the budget. */
static void hop_window_judge(struct path *p, size_t i, uint64_t waiting)
{
	struct path_hop *h = &p->hops[i];
	struct chanwin_view v = {
	    .now = chanwin_now(p->loop),
	    .rtt = h->rtt,
	    .max = p->window_max > JUMP_WINDOW ? p->window_max : 0,
	    .unreceived = waiting,
	    .backlog = waiting > 0,
	};
	uint64_t held;

	chanwin_judge(&h->win, &v);
	held = chanwin_held(&h->win);
	window_budget_charge(&h->window_charge, held > JUMP_WINDOW ? held - JUMP_WINDOW : 0);
}

/*
 * After the link above was pumped: what it read from hop i's channel counts in the epoch,
 * which is judged once a whole window came or the link above took everything, and the
 * window is granted again beside what still waits for it. 0 or a fatal libssh2 code.
 */
static int hop_window_update(struct path *p, size_t i)
{
	struct path_hop *h = &p->hops[i];
	struct link *above = &p->links[i + 1];
	LIBSSH2_CHANNEL *ch = p->channels[i];
	uint64_t waiting, n;
	bool whole = false;

	if (!ch || !above->active || above->stream != ch)
		return 0;
	waiting = buffer_len(&above->stream_in);
	n = above->stream_read - h->read_seen;
	h->read_seen = above->stream_read;
	if (n > 0)
		whole = chanwin_count(&h->win, n, waiting, p->loop);
	chanwin_sync(ch, &h->win);
	if (whole || waiting == 0)
		hop_window_judge(p, i, waiting);
	memacct_charge(MEMACCT_WINDOW, &h->acct_window, chanwin_open(ch, &h->win));
	memacct_charge(MEMACCT_BUFFER, &h->acct_buffer, above->stream_in.cap);
	return chanwin_regrant(ch, &h->win, waiting);
}

/* Moves bytes between hop i's channel and the link above, then grants the channel's
 * window. A grant libssh2 could not send goes before the channel is read again. */
static int hop_pump(struct path *p, size_t i)
{
	int rc = chanwin_flush(p->channels[i], &p->hops[i].win);

	if (rc == LIBSSH2_ERROR_EAGAIN) {
		link_want_pump(&p->links[i]); /* the pump comes back when the session moves */
		return 0;
	}
	if (rc < 0 && ssh_error_fatal(rc))
		return rc;
	p->hops[i].win.pending = 0;
	rc = link_stream_pump(&p->links[i + 1]);
	if (rc)
		return rc;
	return hop_window_update(p, i);
}

static int hop_on_input(void *userdata)
{
	struct path_hop *h = userdata;
	struct path *p = h->path;

	if (p->opening[h->index])
		return hop_open_next(p, h->index);
	if (!p->channels[h->index])
		return 0;
	return hop_pump(p, h->index);
}

static void hop_on_drained(void *userdata)
{
	struct path_hop *h = userdata;
	struct path *p = h->path;
	int rc;

	/* room below: what the hop above queued may go now */
	if (!p->channels[h->index])
		return;
	rc = hop_pump(p, h->index);
	if (rc)
		link_session_error(&p->links[h->index], rc);
}

static void hop_on_rtt(void *userdata, double seconds)
{
	struct path_hop *h = userdata;

	if (h->rtt <= 0 || seconds < h->rtt)
		h->rtt = seconds;
}

static size_t hop_allowance(void *userdata)
{
	struct path_hop *h = userdata;

	/* twice what its channel may hold: libssh2 keeps each packet whole, with its headers */
	return h->path->channels[h->index] ? 2 * chanwin_held(&h->win) : 0;
}

static bool hop_drain(void *userdata)
{
	struct path_hop *h = userdata;
	struct path *p = h->path;

	return p->channels[h->index] != NULL || p->opening[h->index];
}

int path_init(struct path *p, size_t n_hops)
{
	memset(p, 0, sizeof(*p));
	p->n_hops = n_hops;
	p->links = calloc(n_hops + 1, sizeof(*p->links));
	p->params = calloc(n_hops + 1, sizeof(*p->params));
	if (!p->links || !p->params)
		return -ENOMEM;
	for (size_t i = 0; i <= n_hops; i++)
		p->links[i].fd = -1;
	return 0;
}

void path_finish(struct path *p)
{
	free(p->links);
	free(p->params);
	p->links = NULL;
	p->params = NULL;
}

void path_open(struct path *p, struct ev_loop *loop, const struct link_params *params,
	       size_t n_links, uint64_t window_max, const struct link_ops *final_ops)
{
	struct link_ops ops;

	memset(p->channels, 0, sizeof(p->channels));
	memset(p->opening, 0, sizeof(p->opening));
	p->loop = loop;
	p->n_hops = n_links - 1;
	p->window_max = window_max;
	p->final_ops = *final_ops;
	memcpy(p->params, params, n_links * sizeof(*params));
	ops = ops_of(p, 0);
	link_open(&p->links[0], loop, &p->params[0], &ops);
}

void path_close(struct path *p, bool goodbye)
{
	if (!p->links)
		return;
	for (size_t i = p->n_hops + 1; i-- > 0;) {
		link_close(&p->links[i], goodbye);
		if (i < p->n_hops) {
			p->channels[i] = NULL; /* freed with the session it belongs to */
			hop_release(&p->hops[i]);
		}
		if (i < JUMP_HOPS_MAX)
			p->opening[i] = false;
	}
}

struct link *path_final(struct path *p)
{
	return &p->links[p->n_hops];
}

void path_set_params(struct path *p, const struct link_params *params, size_t n_links)
{
	memcpy(p->params, params, n_links * sizeof(*params));
	for (size_t i = 0; i < n_links; i++)
		if (p->links[i].active)
			p->links[i].p = params[i];
}

void path_step_str(const struct path *p, char *buf, size_t size)
{
	for (size_t i = 0; i <= p->n_hops; i++) {
		const struct link *l = &p->links[i];

		/* the first link has none before it: nothing opened yet, or closed again */
		if (!l->active && i == 0) {
			snprintf(buf, size, "connecting to %s:%u", p->params[0].host,
				 p->params[0].port);
			return;
		}
		if (!l->active) {
			snprintf(buf, size, "opening a channel to %s:%u via %s:%u",
				 p->params[i].host, p->params[i].port, p->params[i - 1].host,
				 p->params[i - 1].port);
			return;
		}
		if (l->step == LINK_READY && i < p->n_hops)
			continue;
		if (i == 0)
			snprintf(buf, size, "%s", link_step_str(l->step));
		else
			snprintf(buf, size, "%s via %s:%u", link_step_str(l->step),
				 p->params[i - 1].host, p->params[i - 1].port);
		return;
	}
	snprintf(buf, size, "ready");
}
