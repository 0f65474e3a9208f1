#pragma once
#include <curl/curl.h>
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "alert_debounce.h"
#include "alert_format.h"
#include "backoff.h"
#include "config.h"
#include "list.h"
#include "status.h"

/*
 * What the alerter's files share; private to src/alert/.
 *
 *   alert.c               the alerter, its targets, their delivery queues, alert-test runs
 *   alert_http.c          webhooks: libcurl's multi interface on the loop, the CA store
 *   alert_exec.c          programs: posix_spawn, ev_child, killed at the timeout
 *   alert_target_watch.c  a target's watch on one tunnel: snapshots and timers to events
 *
 * A delivery is one event for one target. alert.c starts each attempt of it in
 * alert_http.c or alert_exec.c, whichever the target is, and the attempt ends, once, in
 * alert_delivery_done(); alert.c decides what follows (a retry, the next event). The files
 * below alert.c reach its queue through the alerter's struct alert_queue_ops, so that they
 * need this header only.
 */

struct alert_test_run;

enum alert_outcome {
	ALERT_OUTCOME_OK,
	ALERT_OUTCOME_RETRY, /* worth another attempt */
	ALERT_OUTCOME_FAIL,  /* another attempt would fail the same way */
};

struct alert_delivery {
	struct list link; /* in target->queue, or target->tests */
	struct alert_target *target;
	struct alert_event event;
	bool resend;		    /* an Alertmanager re-send (never queued twice) */
	struct alert_test_run *run; /* test deliveries only */
	size_t slot;
	unsigned attempts;
	struct backoff backoff;
	ev_timer retry;	   /* the wait before the next attempt */
	ev_timer deadline; /* the attempt's: its callback is set by whoever arms it */
	uint64_t timeout_ms;
	/* alert_http.c */
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	char errbuf[CURL_ERROR_SIZE];
	struct list trust_link; /* in alerter->trust_waiting while it waits for the CA store */
	/* alert_exec.c */
	pid_t pid;
	ev_child child;
	bool killed; /* timed out */
};

struct alert_target {
	struct list link; /* in alerter->targets, in config order */
	struct alerter *alerter;
	const struct alert_config *cfg;
	char name[128];
	struct alert_policy policy;
	struct list watches; /* struct alert_target_watch, alert_target_watch.c's */
	struct list queue;   /* the head is being delivered when busy */
	size_t queued;
	bool busy;
	struct list tests;
	uint64_t sent[ALERT_EVENT_COUNT];
	uint64_t failed;
	bool seen;
};

/* alert.c's queue, as alerter_create() hands it to the files below. */
struct alert_queue_ops {
	void (*delivery_done)(struct alert_delivery *d, enum alert_outcome outcome,
			      const char *result);
	void (*delivery_start)(struct alert_delivery *d, uint64_t budget_ms);
	void (*target_enqueue)(struct alert_target *t, const struct alert_event *e, bool resend);
};

struct alerter {
	struct ev_loop *loop;
	char node[256];
	struct list targets;
	struct alert_test_run *runs;
	/* the daemon's own condition (metrics_stale) while it stands, for re-sends */
	struct alert_event daemon_event;
	bool daemon_firing;
	double daemon_since; /* monotonic */
	ev_timer daemon_resend;
	const struct alert_queue_ops *queue; /* alert.c's */
	/* alert_http.c */
	bool curl_global; /* holds a reference on curl_global_init() */
	CURLM *multi;
	ev_timer curl_timer;
	struct list socks;
	struct alert_trust *trust;
	struct list trust_waiting; /* HTTPS deliveries, until the CA certificates are read */
};

/* alert.c */

/*
 * The end of an attempt: `result` is "HTTP 200", "exit status 3", "timed out ...". Logs
 * and counts it, then retries later, gives up or reports the test, and starts the target's
 * next event. Frees d unless it is retried.
 */
static inline void alert_delivery_done(struct alert_delivery *d, enum alert_outcome outcome,
				       const char *result)
{
	d->target->alerter->queue->delivery_done(d, outcome, result);
}

/* The attempt proper, by the target's kind: again after a wait for the CA store. */
static inline void alert_delivery_start(struct alert_delivery *d, uint64_t budget_ms)
{
	d->target->alerter->queue->delivery_start(d, budget_ms);
}

/* Queues an event for the target (ALERT_QUEUE_MAX: the oldest waiting one is dropped) and
 * delivers it when the target is idle. A re-send already waiting is not queued twice. */
static inline void alert_target_enqueue(struct alert_target *t, const struct alert_event *e,
					bool resend)
{
	t->alerter->queue->target_enqueue(t, e, resend);
}

/* alert_http.c */

/* The multi handle on a->loop and the CA store (not read yet). 0 or -ENOMEM; on failure
 * alert_http_finish() cleans up. */
int alert_http_init(struct alerter *a);
/* Call after every transfer is aborted. Accepts what a failed alert_http_init() left. */
void alert_http_finish(struct alerter *a);
/* Reads the CA certificates (in the background) when a target of cfg is https. */
void alert_http_sync(struct alerter *a, const struct config *cfg);
/* POSTs d's event to the target's url, within budget_ms; an HTTPS one first waits for
 * the CA store when it is not read yet. Ends in alert_delivery_done(), maybe at once. */
void alert_http_start(struct alert_delivery *d, uint64_t budget_ms);
/* Stops the attempt without a word (the caller stops d->deadline). */
void alert_http_abort(struct alert_delivery *d);

/* alert_exec.c */

/* Runs the target's program with the event in its environment, killed after d->timeout_ms.
 * Ends in alert_delivery_done(), maybe at once. */
void alert_exec_start(struct alert_delivery *d);
/* Kills the program's process group, if it runs (the caller stops d->deadline). */
void alert_exec_abort(struct alert_delivery *d);

/* alert_target_watch.c */

/*
 * Watches the tunnels t's `tunnels` filter wants among `tunnels` (new ones start from
 * their snapshot, kept ones take the new policy), feeds each its snapshot and drops the
 * watches of tunnels that are gone. 0, or -ENOMEM with the watches that could be made.
 */
int alert_target_watch_sync(struct alert_target *t, const struct config *cfg,
			    const struct status_tunnel *tunnels, size_t n_tunnels);
/* A new snapshot of a tunnel: sends what t's watch of it decides. Unwatched: nothing. */
void alert_target_watch_update(struct alert_target *t, const struct status_tunnel *snap);
void alert_target_watch_drop_all(struct alert_target *t);
