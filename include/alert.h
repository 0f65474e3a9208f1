#pragma once
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "status.h"

struct tunnel;

#define ALERT_QUEUE_MAX	      64    /* undelivered events per target; the oldest is dropped */
#define ALERT_ATTEMPTS_MAX    5	    /* per event, on network errors, 5xx, 408, 429, exec failure */
#define ALERT_RETRY_FIRST_MS  1000  /* retry waits double from here (jittered)... */
#define ALERT_RETRY_MAX_MS    16000 /* ...up to this */
#define ALERT_TEST_TIMEOUT_MS 20000 /* cap of a test attempt; the ctl client waits longer */

/*
 * The debounce of one (alert target, tunnel) pair, kept free of I/O. Times are seconds on
 * one monotonic clock (the loop's). A down event is due once the tunnel has not been up
 * for down_after (counting from start when it never came up); failures that need a human
 * make it due at once. An up event follows only a down event, and only with
 * send_resolved. While a down event stands, it is due again every `resend` seconds when
 * resend > 0 (Alertmanager).
 */
struct alert_policy {
	double down_after;
	double resend;
	bool send_resolved;
};

struct alert_debounce {
	bool down;	   /* not up since down_since */
	bool fired;	   /* a down event was raised for this outage */
	double down_since; /* when the outage began (or the watch started, if not up then) */
	double due;	   /* when alert_debounce_expire() has work; 0: nothing scheduled */
};

enum alert_action {
	ALERT_ACTION_NONE,
	ALERT_ACTION_DOWN,
	ALERT_ACTION_UP, /* the outage lasted now - down_since */
	ALERT_ACTION_RESEND,
};

void alert_debounce_init(struct alert_debounce *d, const struct alert_policy *p, bool up,
			 double now);
/* A state transition of the tunnel: up or not, and whether the failure needs a human. */
enum alert_action alert_debounce_update(struct alert_debounce *d, const struct alert_policy *p,
					bool up, bool needs_human, double now);
/* The timer at d->due went off (or any time: nothing happens before due). */
enum alert_action alert_debounce_expire(struct alert_debounce *d, const struct alert_policy *p,
					double now);
/* Re-plans `due` after a reload changed the policy (an outage in progress keeps its start). */
void alert_debounce_set_policy(struct alert_debounce *d, const struct alert_policy *p, double now);

/*
 * The alerter: one target per [alert:NAME], one debounce per matching tunnel, and a FIFO
 * of undelivered events per target, delivered one at a time (libcurl multi on the loop,
 * or posix_spawn + ev_child for exec targets), so nothing here ever blocks the loop.
 */
struct alerter;

/* Returns 0 or -errno; *ret untouched on failure. Exec targets need the default loop. */
int alerter_create(struct ev_loop *loop, struct alerter **ret);
/* Drops undelivered events (logged), aborts transfers and kills programs. Accepts NULL. */
void alerter_destroy(struct alerter *a);

/*
 * Brings the targets in line with cfg (kept by name: counters, debounce and queued events
 * survive; removed ones drop their events) and the debounces in line with the tunnels.
 * Call after creating the tunnels and after every reload; cfg must outlive the next call.
 * Returns 0 or -ENOMEM (the alerter is still consistent, maybe with fewer watches).
 */
int alerter_sync(struct alerter *a, const struct config *cfg, struct tunnel *const *tunnels,
		 size_t n_tunnels);

/* Feeds a tunnel's state transition (call from the tunnel's on_state). */
void alerter_tunnel_state(struct alerter *a, const struct tunnel *t);

/*
 * `body` has one line per target tried, "NAME: HTTP 200" or "NAME: failed: ..."; `failed`
 * counts the failures. Called exactly once, never from within alerter_test().
 */
typedef void (*alerter_test_cb)(void *userdata, size_t targets, size_t failed, const char *body);

/*
 * Sends a test event (one attempt, outside the queues) to the target `name`, or to all
 * when name is NULL. Returns 0 and calls cb later, or -ENOENT (no such target / none
 * configured) or -ENOMEM without calling it.
 */
int alerter_test(struct alerter *a, const char *name, alerter_test_cb cb, void *userdata);

/* Copies the per-target counters into s->alerts. Returns 0 or -ENOMEM. */
int alerter_snapshot(const struct alerter *a, struct status *s);
