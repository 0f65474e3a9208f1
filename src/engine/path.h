#pragma once
#include <libssh2.h>
#include <stdbool.h>
#include <stddef.h>

#include "chanwin.h"
#include "jumpspec.h"
#include "link.h"

/*
 * The way to the destination sshd (private to the engine, top of the link layer): a link
 * to it, or, through bastions (ProxyJump, as ssh -J), a chain of links where each one after
 * the first runs over a direct-tcpip channel of the one before. Every hop checks its host
 * key, authenticates and keeps its own keepalives; whichever hop fails, the destination's
 * ops hear on_fail (its reason names the hop). The destination link is path_final().
 * The channels between hops open with no window: the path grants it by the window rule
 * (chanwin.h) as the link above takes what was read for it.
 */
struct path;

/* What an intermediate hop's ops hand to the path, and the receive window of the channel
 * on its session to the next hop's sshd (the link above reads it). */
struct path_hop {
	struct path *path;
	size_t index;
	struct chanwin win;
	double rtt;		  /* the hop's smallest keepalive round trip; 0: none yet */
	uint64_t read_seen;	  /* the link above's stream_read at the last look */
	uint64_t window_charge;	  /* its share of the window budget (window.h) */
	uint64_t acct_window, acct_buffer; /* its shares of the memory account */
};

struct path {
	struct ev_loop *loop;
	size_t n_hops;		    /* bastions before the destination; 0: direct */
	struct link *links;	    /* n_hops + 1 (path_init): a direct tunnel holds one */
	struct link_params *params; /* n_hops + 1 */
	LIBSSH2_CHANNEL *channels[JUMP_HOPS_MAX]; /* on links[i], to links[i + 1]'s sshd */
	bool opening[JUMP_HOPS_MAX];
	struct path_hop hops[JUMP_HOPS_MAX];
	struct link_ops final_ops; /* the destination's, from the layer above */
	uint64_t window_max;	   /* channel_window_max: how far a hop's window may grow */
};

/* Room for n_hops bastions and the destination, every link closed. 0 or -ENOMEM. */
int path_init(struct path *p, size_t n_hops);
/* Frees what path_init took; the path must be closed. Accepts a failed init. */
void path_finish(struct path *p);
/* Starts the first hop; params[0..n_links-1], the last one the destination's; n_links is
 * path_init's n_hops + 1. The channels between hops grow their windows up to window_max. */
void path_open(struct path *p, struct ev_loop *loop, const struct link_params *params,
	       size_t n_links, uint64_t window_max, const struct link_ops *final_ops);
/* Closes every hop, the destination first, without waiting on the network. */
void path_close(struct path *p, bool goodbye);
/* The destination's link (the one channels are opened on). */
struct link *path_final(struct path *p);
/* New parameters of the same meaning (an equal configuration after a reload). */
void path_set_params(struct path *p, const struct link_params *params, size_t n_links);
/* Where connecting is, for messages: "SSH banner and key exchange via bastion:22". */
void path_step_str(const struct path *p, char *buf, size_t size);
