#pragma once
#include <stdbool.h>
#include <stdint.h>

/*
 * Receive windows of local_forward channels that grow with the link (pure, no I/O).
 *
 * One stream over an SSH channel moves at most one receive window per round trip. The
 * forward layer opens each channel with no window and grants all of it itself (forward.c),
 * so a window is what the server may have sent and the client not taken yet. It watches
 * each channel in epochs: an epoch starts at the first byte read after the last one ended
 * and ends when the client has taken a whole window. window_next() then says how large a
 * window to keep open; the forward layer grants the difference with
 * libssh2_channel_receive_window_adjust2() whenever nothing of the channel waits unread.
 *
 * The rule, with rtt the session's smallest keepalive round trip (queues on a loaded path
 * inflate the smoothed one as the window grows, which would feed on itself), and backlog
 * meaning the client left bytes waiting at some point of the epoch, in the daemon or in
 * its socket's send queue (more than WINDOW_CLIENT_BACKLOG bytes the kernel had not
 * delivered: bytes the kernel takes are not bytes the client read):
 *   - growth off (max <= base): base; no RTT measured yet: halve on backlog, else keep;
 *   - more than WINDOW_SLOW_RTTS round trips without a whole window taken (a slow or idle
 *     stream, or a client that stalled: its bytes were not read meanwhile, so nothing was
 *     granted either): halve;
 *   - a whole window within WINDOW_LIMITED_RTTS round trips and no backlog (the window,
 *     not the link or the client, was the limit): double, up to max and to what the
 *     budget has left, unless the daemon's memory account is tight (memacct.h): keep;
 *   - a whole window that took longer with a backlog (the client was the limit): halve;
 *   - otherwise (the epoch runs on; the link was the limit; a fast window with a moment
 *     of backlog): keep.
 * Halving never goes below base. A momentary backlog (a client not scheduled for a few
 * milliseconds on a busy machine) stops growth but does not shrink a fast window.
 */

/* A whole window within this many round trips: the window was the limit. */
#define WINDOW_LIMITED_RTTS 1.5
/* Not a whole window within this many round trips: the stream does not need it. */
#define WINDOW_SLOW_RTTS 4.0
/* More bytes than this in the client's socket, not delivered yet: the client is behind. */
#define WINDOW_CLIENT_BACKLOG (16 * 1024)

struct window_input {
	uint64_t consumed;    /* bytes the client took since the epoch began */
	double elapsed;	      /* seconds since the epoch began */
	double rtt;	      /* seconds; <= 0: not measured yet */
	uint64_t window;      /* the window kept open now */
	uint64_t base;	      /* the window first granted to the channel: the floor */
	uint64_t max;	      /* channel_window_max; <= base: no growth */
	uint64_t budget_left; /* daemon-wide window budget not granted yet */
	bool backlog;	      /* the client left bytes waiting in the daemon during the epoch */
	/* the most bytes its socket held undelivered during the epoch (SIOCOUTQ) */
	uint64_t client_queued;
	bool memory_tight; /* the daemon's memory account stops growth */
};

/* The window to keep open from now on (between base and max). */
uint64_t window_next(const struct window_input *in);

/*
 * The daemon-wide window budget: a module-level count of the window granted beyond what
 * libssh2 keeps open by itself, summed over every local_forward channel of every tunnel.
 * It bounds what clients that stop reading can make the daemon hold ([moletun]
 * window_budget). One event loop: no locking.
 */
void window_budget_set_limit(uint64_t limit);
uint64_t window_budget_limit(void);
uint64_t window_budget_used(void);
/* What the limit has left (0 when the count is over it after a lower limit). */
uint64_t window_budget_left(void);
/* Moves a channel's share of the count from *charge to `charge`. */
void window_budget_charge(uint64_t *charge, uint64_t charge_now);
