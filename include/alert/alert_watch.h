#pragma once
#include <stdbool.h>
#include <stddef.h>

#include "alert_debounce.h"
#include "status.h"

/*
 * All the conditions one alert target watches on one tunnel, and what the snapshots said
 * that a later event needs (reasons, RTT); free of I/O like alert_debounce.h, on whose
 * debounce of one condition it builds. alert_target_watch.c runs it on the loop.
 *
 * - down/up: the tunnel is not up, as struct alert_debounce.
 * - target_down/target_up, per local forward: its target is unreachable. "unknown" is no
 *   evidence: it never starts or resolves the condition, and it cancels one not fired yet.
 * - degraded/recovered: the tunnel's health is degraded. While a target is down the health
 *   says nothing of the RTT: as "unknown" above.
 *
 * - audit_failed: the sidecar audit's verdict changed to not_hardened. One event per
 *   change, no debounce and no resolving event ("unknown" keeps the last verdict: an audit
 *   that could not finish neither starts nor ends anything).
 *
 * No storms: while the tunnel is not up, the target and degraded conditions are suspended
 * (no events, no re-sends). If the tunnel comes back before its down event, they go on
 * where they were. Once the down event is raised it stands for everything: the target and
 * degraded conditions end without events of their own (no target_up before down), and
 * after `up` each starts afresh, firing only after down_after again.
 */
struct alert_forward_watch {
	char listen[300]; /* identifies the forward across snapshots, with target */
	char target[300];
	char error[256]; /* why unreachable: the latest target_error of the episode */
	struct alert_debounce debounce;
};

struct alert_watch_state {
	struct alert_debounce tunnel;
	char reason[256]; /* the latest error of the current (or last) outage */
	struct alert_debounce degraded;
	bool rtt_measured;
	double rtt;	 /* seconds: the latest smoothed RTT */
	double rtt_peak; /* the highest smoothed RTT of the current (or last) degraded episode */
	struct alert_forward_watch *forwards;
	size_t n_forwards;
	enum sidecar_state sidecar; /* the last verdict (never SIDECAR_UNKNOWN once one came) */
	char sidecar_failed[256];   /* its failed checks, comma-separated */
	double sidecar_since;	    /* when it changed to not_hardened */
};

/* What to send; `forward` indexes state->forwards for target events. */
struct alert_decision {
	enum alert_event_kind kind;
	size_t forward;
	bool resend; /* an Alertmanager re-send of a firing event */
};

/* Room for the decisions of one call on a state with n forwards. */
#define ALERT_DECISIONS_MAX(n) ((n) + 3)

/* Watches snap's tunnel from `now`; decides nothing (feed the same snap to update). 0 or
 * -ENOMEM. */
int alert_watch_init(struct alert_watch_state *s, const struct alert_policy *p,
		     const struct status_tunnel *snap, double now);
void alert_watch_finish(struct alert_watch_state *s);

/*
 * A new snapshot of the tunnel (its state, health or a target changed, or a reload). The
 * forwards are matched by listen address and target; changed ones start afresh. Writes at
 * most ALERT_DECISIONS_MAX(snap->n_forwards) decisions to `out`, in the order to send
 * them, and their number to *ret_n. 0, or -ENOMEM with s untouched and *ret_n 0.
 */
int alert_watch_update(struct alert_watch_state *s, const struct alert_policy *p,
		       const struct status_tunnel *snap, double now, struct alert_decision *out,
		       size_t *ret_n);
/* The timer at alert_watch_due() went off. Returns the number of decisions written. */
size_t alert_watch_expire(struct alert_watch_state *s, const struct alert_policy *p, double now,
			  struct alert_decision *out);
/* When alert_watch_expire() has work next; 0: nothing scheduled. */
double alert_watch_due(const struct alert_watch_state *s);
void alert_watch_set_policy(struct alert_watch_state *s, const struct alert_policy *p, double now);
