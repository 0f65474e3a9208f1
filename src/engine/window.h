#pragma once
#include <stdbool.h>
#include <stdint.h>

/*
 * Receive windows of local_forward channels that grow with the link (pure, no I/O).
 *
 * One stream over an SSH channel moves at most one receive window per round trip. The
 * forward layer opens each channel with no window and grants all of it itself
 * (forward_window.c), so a window is what the server may have sent and the client not taken
 * yet. It watches each channel in epochs: an epoch starts at the first byte read after the
 * last one ended and ends when the client has taken a whole window. window_next() then says
 * how large a window to keep open; the forward layer grants the difference with
 * libssh2_channel_receive_window_adjust2() whenever nothing of the channel waits unread.
 *
 * The rule, with rtt the session's smallest keepalive round trip (queues on a loaded path
 * inflate the smoothed one as the window grows, which would feed on itself), at least
 * WINDOW_RTT_MIN, consumed the
 * bytes the client received (read for it, less what its socket still holds: bytes the
 * kernel takes are not bytes the client read), and backlog meaning bytes wait in the
 * daemon for the client when the epoch is judged:
 *   - growth off (max <= base): base; no RTT measured yet: halve on backlog, else keep;
 *   - more than WINDOW_SLOW_RTTS round trips without a whole window taken (a slow or idle
 *     stream, or a client that stalled: its bytes were not read meanwhile, so nothing was
 *     granted either): halve;
 *   - a whole window within WINDOW_LIMITED_RTTS round trips (the window, not the link or
 *     the client, was the limit): double, up to max and to what the budget has left,
 *     unless there is a backlog, the client's socket held more than WINDOW_CLIENT_BACKLOG
 *     bytes it had not delivered when new data came for it, or the daemon's memory
 *     account is tight (memacct.h): keep;
 *   - a whole window that took longer with a backlog (the client was the limit): halve;
 *   - otherwise (the epoch runs on; the link was the limit): keep.
 * Halving never goes below base. The socket's queue only stops growth: the kernel's queue
 * of a client socket is small (conn.h), so a window's data, which arrives as a burst,
 * fills it for a moment even for a fast client; how long the client took for a whole
 * window tells its speed.
 */

/* The least round trip the rule counts, seconds. Below it (loopback, a LAN: ~0.1 ms) the
 * keepalive's round trip times an idle server; a grant under bulk flow waits for both
 * processes' loops, each working through a window's packets, and a window that never
 * grew starved a fast client there (a loopback download 15 % below libssh2's own
 * top-ups). With 1 ms, a window grows on such a path only for a client that takes it
 * faster than 170 MB/s (256K within 1.5 ms). */
#define WINDOW_RTT_MIN 0.001
/* A whole window within this many round trips: the window was the limit. */
#define WINDOW_LIMITED_RTTS 1.5
/* Not a whole window within this many round trips: the stream does not need it. */
#define WINDOW_SLOW_RTTS 4.0
/* More bytes than this in the client's socket, not delivered when new data comes for it:
 * the client is behind. */
#define WINDOW_CLIENT_BACKLOG (16 * 1024)

struct window_input {
	uint64_t consumed;    /* bytes the client received since the epoch began */
	double elapsed;	      /* seconds since the epoch began */
	double rtt;	      /* seconds; <= 0: not measured yet */
	uint64_t window;      /* the window kept open now */
	uint64_t base;	      /* the window first granted to the channel: the floor */
	uint64_t max;	      /* channel_window_max; <= base: no growth */
	uint64_t budget_left; /* daemon-wide window budget not granted yet */
	bool backlog;	      /* bytes wait in the daemon for the client now */
	/* bytes its socket held undelivered when new data last came for it (SIOCOUTQ) */
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
