#pragma once
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "status.h"

#define ALERT_QUEUE_MAX	      64    /* undelivered events per target; the oldest is dropped */
#define ALERT_ATTEMPTS_MAX    5	    /* per event, on network errors, 5xx, 408, 429, exec failure */
#define ALERT_RETRY_FIRST_MS  1000  /* retry waits double from here (jittered)... */
#define ALERT_RETRY_MAX_MS    16000 /* ...up to this */
#define ALERT_TEST_TIMEOUT_MS 20000 /* cap of a test attempt; the ctl client waits longer */

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
 * survive; removed ones drop their events) and the debounces in line with the tunnels, one
 * snapshot each (tunnel_snapshot()). Call after creating the tunnels and after every
 * reload; cfg must outlive the next call. Returns 0 or -ENOMEM (the alerter is still
 * consistent, maybe with fewer watches).
 */
int alerter_sync(struct alerter *a, const struct config *cfg, const struct status_tunnel *tunnels,
		 size_t n_tunnels);

/*
 * Feeds a tunnel's new snapshot: call whenever its state, its health or a forward's
 * target state changed (more often is harmless). Decides down/up, target_down/target_up
 * and degraded/recovered events (see alert_watch.h); a tunnel no target watches is
 * ignored. Accepts a NULL alerter.
 */
void alerter_tunnel_update(struct alerter *a, const struct status_tunnel *snap);

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

/*
 * The daemon's own condition, not a tunnel's (ALERT_EVENT_METRICS_STALE: the metrics
 * textfile is stale), to every target whatever its `tunnels`: the firing kind when it
 * begins (for_seconds ago), the resolving kind (ALERT_EVENT_METRICS_FRESH) when it ends,
 * sent only with send_resolved. No down_after: the caller debounces. While it stands it
 * is re-sent every ALERTMANAGER_RESEND_SEC to Alertmanager targets. The same state twice
 * sends nothing. Accepts a NULL alerter.
 */
void alerter_daemon_event(struct alerter *a, enum alert_event_kind kind, const char *reason,
			  double for_seconds);

/* Copies the per-target counters into s->alerts. Returns 0 or -ENOMEM. */
int alerter_snapshot(const struct alerter *a, struct status *s);
