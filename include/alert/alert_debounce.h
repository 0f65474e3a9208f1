#pragma once
#include <stdbool.h>

/*
 * When alerts are due, kept free of I/O: the alerter feeds tunnel snapshots and timer
 * expiries and sends what comes out (alert_watch.h gathers the conditions of one tunnel).
 * Times are seconds on one monotonic clock.
 */

/*
 * The debounce of one condition (the tunnel down, a target unreachable, the tunnel
 * degraded) for one alert target. A firing event is due once the condition has held for
 * down_after (counting from start when it held then); failures that need a human make it
 * due at once. The resolving event follows only a firing one, and only with
 * send_resolved. While a firing event stands, it is due again every `resend` seconds when
 * resend > 0 (Alertmanager).
 */
struct alert_policy {
	double down_after;
	double resend;
	bool send_resolved;
};

struct alert_debounce {
	bool down;	   /* the condition holds since down_since */
	bool fired;	   /* the firing event was raised for this episode */
	double down_since; /* when the episode began (or the watch started, if held then) */
	double due;	   /* when alert_debounce_expire() has work; 0: nothing scheduled */
};

enum alert_action {
	ALERT_ACTION_NONE,
	ALERT_ACTION_DOWN,
	ALERT_ACTION_UP, /* the episode lasted now - down_since */
	ALERT_ACTION_RESEND,
};

void alert_debounce_init(struct alert_debounce *d, const struct alert_policy *p, bool up,
			 double now);
/* The condition changed, or was confirmed: up (not holding) or not, and whether the
 * failure needs a human. */
enum alert_action alert_debounce_update(struct alert_debounce *d, const struct alert_policy *p,
					bool up, bool needs_human, double now);
/* The timer at d->due went off (or any time: nothing happens before due). */
enum alert_action alert_debounce_expire(struct alert_debounce *d, const struct alert_policy *p,
					double now);
/* Re-plans `due` after a reload changed the policy (an episode in progress keeps its start). */
void alert_debounce_set_policy(struct alert_debounce *d, const struct alert_policy *p, double now);
