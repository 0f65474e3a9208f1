#pragma once
#include <stdbool.h>
#include <stddef.h>

/*
 * Liveness of an SSH peer as pure decisions (no I/O; times in seconds on the monotonic
 * clock of clock.h, so a wall-clock step neither kills a live peer nor hides a dead one).
 * A keepalive goes out after `probe_after` of silence and again every `probe_after` while
 * the silence lasts (every `probe_after` regardless when its answers can be seen: they also
 * time the round trip); the peer is dead after interval * count_max without a byte, with a
 * keepalive unanswered that long, or with bytes waiting that the socket has not taken that
 * long. probe_after is the interval, except with count_max 1, where it is half of it so an
 * answer can arrive before the deadline.
 */
struct liveness_input {
	double now;
	double last_rx;	       /* the last byte from the peer */
	double last_tx;	       /* the socket last took bytes, or bytes started waiting */
	double keepalive_sent; /* the last keepalive (0: none yet) */
	bool pending;	       /* it waits for its answer */
	bool answers;	       /* answers are seen (keepalives on a session channel) */
	size_t out_len;	       /* bytes waiting for the socket */
	double interval;
	unsigned count_max;
};

enum liveness_verdict {
	LIVENESS_OK,
	LIVENESS_SEND,		  /* send a keepalive now */
	LIVENESS_DEAD_SILENT,	  /* nothing received for the whole bound */
	LIVENESS_DEAD_UNANSWERED, /* it keeps sending, but a keepalive went unanswered */
	LIVENESS_DEAD_NOT_TAKEN,  /* bytes waiting, none taken by the socket for the bound */
};

double liveness_probe_after(double interval, unsigned count_max);
enum liveness_verdict liveness_check(const struct liveness_input *in);
/* When to look again (absolute); call after acting on the verdict. */
double liveness_next_check(const struct liveness_input *in);
