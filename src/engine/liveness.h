#pragma once
#include <stdbool.h>
#include <stddef.h>

/*
 * Liveness of an SSH peer as pure decisions (no I/O; times in seconds on the monotonic
 * clock of clock.h, so a wall-clock step neither kills a live peer nor hides a dead one).
 *
 * Two kinds of keepalive. The answered kind (the link's channel open that the server
 * refuses) goes every `probe_after`, whether or not bytes arrive: its answers time the
 * round trip. The unanswered kind (a global request: the server's reply is read but not
 * seen as an answer, only as bytes) goes after `probe_after` of silence and again every
 * `probe_after` while the silence lasts; it stands in when the server does not answer the
 * first kind, or while one is due but cannot go yet (`blocked`: another channel open holds
 * the session; the link sends the answered one as soon as that open ends).
 *
 * The peer is dead after interval * count_max without a byte, with an answered keepalive
 * unanswered that long, or with bytes waiting that the socket has not taken that long.
 * probe_after is the interval, except with count_max 1, where it is half of it so an
 * answer can arrive before the deadline.
 */
struct liveness_input {
	double now;
	double last_rx;	       /* the last byte from the peer */
	double last_tx;	       /* the socket last took bytes, or bytes started waiting */
	double keepalive_sent; /* the last answered keepalive (0: none yet) */
	bool pending;	       /* it waits for its answer */
	bool answers;	       /* the server answers the answered kind */
	bool blocked;	       /* one is due, but another open holds the session */
	double global_sent;    /* the last unanswered keepalive (0: none yet) */
	size_t out_len;	       /* bytes waiting for the socket */
	double interval;
	unsigned count_max;
};

enum liveness_verdict {
	LIVENESS_OK,
	LIVENESS_SEND,		  /* send an answered keepalive now */
	LIVENESS_SEND_GLOBAL,	  /* send an unanswered keepalive now */
	LIVENESS_DEAD_SILENT,	  /* nothing received for the whole bound */
	LIVENESS_DEAD_UNANSWERED, /* it keeps sending, but a keepalive went unanswered */
	LIVENESS_DEAD_NOT_TAKEN,  /* bytes waiting, none taken by the socket for the bound */
};

double liveness_probe_after(double interval, unsigned count_max);
enum liveness_verdict liveness_check(const struct liveness_input *in);
/* When to look again (absolute); call after acting on the verdict. */
double liveness_next_check(const struct liveness_input *in);
