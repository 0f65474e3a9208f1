#include "path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The jump channel's window: what a hop's session may hold for the hop above. */
#define JUMP_WINDOW LIBSSH2_CHANNEL_WINDOW_DEFAULT

static void hop_on_ready(void *userdata);
static void hop_on_fail(void *userdata, enum link_failure why, const char *reason);
static int hop_on_input(void *userdata);
static void hop_on_drained(void *userdata);
static size_t hop_allowance(void *userdata);
static bool hop_drain(void *userdata);

static struct link_ops hop_ops(struct path *p, size_t i)
{
	p->hops[i] = (struct path_hop){.path = p, .index = i};
	return (struct link_ops){
	    .userdata = &p->hops[i],
	    .on_ready = hop_on_ready,
	    .on_fail = hop_on_fail,
	    .on_input = hop_on_input,
	    .on_drained = hop_on_drained,
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

	rc = link_direct_tcpip(l, &ch, next->host, next->port, "127.0.0.1", 0, JUMP_WINDOW);
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
	ops = ops_of(p, i + 1);
	link_open_stream(&p->links[i + 1], p->loop, next, &ops, l, ch);
	return 0;
}

static int hop_on_input(void *userdata)
{
	struct path_hop *h = userdata;
	struct path *p = h->path;

	if (p->opening[h->index])
		return hop_open_next(p, h->index);
	if (!p->channels[h->index])
		return 0;
	return link_stream_pump(&p->links[h->index + 1]);
}

static void hop_on_drained(void *userdata)
{
	struct path_hop *h = userdata;
	struct path *p = h->path;

	/* room below: what the hop above queued may go now */
	if (p->channels[h->index])
		link_stream_pump(&p->links[h->index + 1]);
}

static size_t hop_allowance(void *userdata)
{
	struct path_hop *h = userdata;

	/* twice the window: libssh2 keeps each packet whole, with its headers */
	return h->path->channels[h->index] ? 2 * JUMP_WINDOW : 0;
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
	       size_t n_links, const struct link_ops *final_ops)
{
	struct link_ops ops;

	memset(p->channels, 0, sizeof(p->channels));
	memset(p->opening, 0, sizeof(p->opening));
	p->loop = loop;
	p->n_hops = n_links - 1;
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
		if (i < p->n_hops)
			p->channels[i] = NULL; /* freed with the session it belongs to */
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
