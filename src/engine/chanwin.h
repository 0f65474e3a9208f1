#pragma once
#include <ev.h>
#include <libssh2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * One channel's receive window, granted by moletun by the window rule (window.h), whoever
 * reads the channel (private to the engine): a client's or a remote forward target's conn
 * (forward_window.c), or the link that runs over a bastion's channel (path.c). The reader
 * says what waits for its consumer; this file keeps the count of what is granted and not
 * read yet, judges the epochs and sends the grants. It calls only window.c, the memory
 * account and libssh2: the path and the forward layer both stand on it.
 *
 * A window is what the server may have sent and the consumer not taken yet. The consumer
 * keeps up when nothing read for it waits in moletun; what it left waiting counts against
 * the room to grant, so a consumer that stalls stops the grants, and its epoch, running
 * on, halves the window.
 */
struct chanwin {
	uint64_t window;      /* the window to keep */
	uint64_t base;	      /* the first grant: the floor of the rule */
	uint64_t initial;     /* the window libssh2 tops up by itself (what it opened with) */
	uint64_t committed;   /* granted and not read yet (exact when nothing waits unread) */
	uint32_t pending;     /* a grant libssh2 could not send yet (EAGAIN) */
	uint64_t epoch_bytes; /* read for the consumer since epoch_start */
	double epoch_start;
};

/* What the reader says of its consumer when the epoch is judged. */
struct chanwin_view {
	double now;	   /* chanwin_now() */
	double rtt;	   /* the session's smallest round trip; <= 0: not measured */
	uint64_t max;	   /* the most the window may grow to; <= base: no growth */
	uint64_t unreceived; /* read for it, not received yet (its socket's queue) */
	uint64_t behind;   /* of that, what it left from before this round (window.h) */
	bool backlog;	   /* bytes read for it wait in moletun */
};

/* When the loop woke up for the events at hand, on the monotonic clock. */
double chanwin_now(struct ev_loop *loop);
/* A channel whose window starts at `base`; `initial` is the window it was opened with. */
void chanwin_init(struct chanwin *w, uint64_t base, uint64_t initial);
/* Sends a grant libssh2 could not send yet. 0, EAGAIN or a libssh2 error. */
int chanwin_flush(LIBSSH2_CHANNEL *ch, struct chanwin *w);
/* Reads the channel, counting what libssh2 granted for the read itself and what the read
 * took. The read's result. */
ssize_t chanwin_read(LIBSSH2_CHANNEL *ch, struct chanwin *w, char *buf, size_t len);
/* `n` bytes were read for the consumer: counted in the epoch. True when a whole window
 * (and what waits in the consumer's socket) came: time to judge. */
bool chanwin_count(struct chanwin *w, uint64_t n, uint64_t unreceived, struct ev_loop *loop);
/* Judges the epoch by the rule; while the memory account sheds, a grown window goes back
 * to its base. */
void chanwin_judge(struct chanwin *w, const struct chanwin_view *v);
/* What the server may make moletun hold for the channel: a grown window may keep a
 * window's worth waiting for its consumer besides. */
uint64_t chanwin_held(const struct chanwin *w);
/* Grants the room left beside what is committed and `waiting` for the consumer in moletun,
 * if it is worth a grant. 0 or a fatal libssh2 code. */
int chanwin_grant(LIBSSH2_CHANNEL *ch, struct chanwin *w, uint64_t waiting);
/* Nothing of the channel waits unread (a read said EAGAIN): takes the count from libssh2. */
void chanwin_sync(LIBSSH2_CHANNEL *ch, struct chanwin *w);
/* After chanwin_sync and a judgement: grants again if worth it, counting what waits unread
 * first. 0 or a fatal libssh2 code. */
int chanwin_regrant(LIBSSH2_CHANNEL *ch, struct chanwin *w, uint64_t waiting);
/* The window open to the server now: granted, not used yet (for the memory account). */
uint64_t chanwin_open(LIBSSH2_CHANNEL *ch, const struct chanwin *w);
