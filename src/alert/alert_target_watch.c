#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_delivery.h"
#include "alert_watch.h"
#include "clock.h"
#include "log.h"

/* A target's watch on one tunnel (by name, so it survives a tunnel restart): the pure
 * alert_watch_state, fed snapshots and its timer, and the events it decides sent. */
struct alert_target_watch {
	struct list link; /* in target->watches */
	struct alert_target *target;
	char tunnel[128];
	char host[256];
	uint16_t port;
	double degraded_rtt; /* seconds, the tunnel's degraded_rtt (for reasons) */
	struct alert_watch_state state;
	ev_timer timer;
	bool seen; /* alert_target_watch_sync()'s mark */
};

/* The condition a decision is about. */
static const struct alert_debounce *target_watch_condition(const struct alert_target_watch *w,
							   const struct alert_decision *dec)
{
	switch (dec->kind) {
	case ALERT_EVENT_TARGET_DOWN:
	case ALERT_EVENT_TARGET_UP:
		return &w->state.forwards[dec->forward].debounce;
	case ALERT_EVENT_DEGRADED:
	case ALERT_EVENT_RECOVERED:
		return &w->state.degraded;
	default:
		return &w->state.tunnel;
	}
}

static void target_watch_event(struct alert_target_watch *w, const struct alert_decision *dec,
			       double now, struct alert_event *e)
{
	struct alerter *a = w->target->alerter;
	const struct alert_watch_state *st = &w->state;
	double down_since = dec->kind == ALERT_EVENT_AUDIT_FAILED
				? st->sidecar_since
				: target_watch_condition(w, dec)->down_since;
	double ago = now - down_since;
	struct timespec wall = clock_wall();

	memset(e, 0, sizeof(*e));
	e->kind = dec->kind;
	snprintf(e->tunnel, sizeof(e->tunnel), "%s", w->tunnel);
	snprintf(e->node, sizeof(e->node), "%s", a->node);
	snprintf(e->host, sizeof(e->host), "%s", w->host);
	e->port = w->port;
	e->rtt_measured = st->rtt_measured;
	e->rtt = st->rtt;
	switch (dec->kind) {
	case ALERT_EVENT_TARGET_DOWN:
	case ALERT_EVENT_TARGET_UP: {
		const struct alert_forward_watch *f = &st->forwards[dec->forward];

		snprintf(e->forward, sizeof(e->forward), "%s", f->listen);
		snprintf(e->target, sizeof(e->target), "%s", f->target);
		snprintf(e->reason, sizeof(e->reason), "%s",
			 f->error[0] ? f->error : "unreachable");
		break;
	}
	case ALERT_EVENT_DEGRADED:
	case ALERT_EVENT_RECOVERED:
		alert_format_rtt_reason(st->rtt_peak, w->degraded_rtt, e->reason,
					sizeof(e->reason));
		break;
	case ALERT_EVENT_AUDIT_FAILED:
		snprintf(e->reason, sizeof(e->reason), "failed: %.*s", (int)sizeof(e->reason) - 9,
			 st->sidecar_failed);
		break;
	default:
		snprintf(e->reason, sizeof(e->reason), "%s",
			 st->reason[0] ? st->reason : "not connected yet");
		break;
	}
	e->timestamp = wall;
	e->down_for_seconds = ago < 0 ? 0 : ago;
	/* the outage began `ago` seconds before now, on the wall clock */
	e->since = clock_to_wall_at(down_since, now, wall);
}

static void target_watch_log(const struct alert_target_watch *w, const struct alert_event *e)
{
	const char *alert = w->target->name;

	switch (e->kind) {
	case ALERT_EVENT_DOWN:
		log_notice("alert %s: tunnel %s down for %.1fs: %s", alert, w->tunnel,
			   e->down_for_seconds, e->reason);
		break;
	case ALERT_EVENT_UP:
		log_notice("alert %s: tunnel %s up again after %.1fs", alert, w->tunnel,
			   e->down_for_seconds);
		break;
	case ALERT_EVENT_TARGET_DOWN:
		log_notice("alert %s: tunnel %s: target %s unreachable for %.1fs: %s", alert,
			   w->tunnel, e->target, e->down_for_seconds, e->reason);
		break;
	case ALERT_EVENT_TARGET_UP:
		log_notice("alert %s: tunnel %s: target %s reachable again after %.1fs", alert,
			   w->tunnel, e->target, e->down_for_seconds);
		break;
	case ALERT_EVENT_DEGRADED:
		log_notice("alert %s: tunnel %s degraded for %.1fs: %s", alert, w->tunnel,
			   e->down_for_seconds, e->reason);
		break;
	case ALERT_EVENT_RECOVERED:
		log_notice("alert %s: tunnel %s recovered after %.1fs degraded", alert, w->tunnel,
			   e->down_for_seconds);
		break;
	case ALERT_EVENT_AUDIT_FAILED:
		log_notice("alert %s: tunnel %s: sidecar not hardened: %s", alert, w->tunnel,
			   e->reason);
		break;
	default:
		break;
	}
}

static void target_watch_act(struct alert_target_watch *w, const struct alert_decision *decisions,
			     size_t n, double now)
{
	for (size_t i = 0; i < n; i++) {
		struct alert_event e;

		target_watch_event(w, &decisions[i], now, &e);
		if (!decisions[i].resend)
			target_watch_log(w, &e);
		alert_target_enqueue(w->target, &e, decisions[i].resend);
	}
}

static void target_watch_arm(struct alert_target_watch *w)
{
	struct ev_loop *loop = w->target->alerter->loop;
	double due = alert_watch_due(&w->state), left;

	ev_timer_stop(loop, &w->timer);
	if (due == 0)
		return;
	left = due - clock_now();
	ev_timer_set(&w->timer, left > 0 ? left : 0., 0.);
	ev_timer_start(loop, &w->timer);
}

static void target_watch_timer_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
	struct alert_target_watch *w = timer->data;
	struct alert_target *t = w->target;
	struct alert_decision *decisions;
	double now = clock_now(), due = alert_watch_due(&w->state);
	size_t n;

	/* libev measured from its cached time, a hair before ours: the timer is on time */
	if (now < due)
		now = due;
	decisions = calloc(ALERT_DECISIONS_MAX(w->state.n_forwards), sizeof(*decisions));
	if (!decisions) {
		log_err("alert %s: out of memory: events for tunnel %s delayed", t->name,
			w->tunnel);
		ev_timer_set(&w->timer, 1., 0.);
		ev_timer_start(loop, &w->timer);
		return;
	}
	n = alert_watch_expire(&w->state, &t->policy, now, decisions);
	target_watch_act(w, decisions, n, now);
	free(decisions);
	target_watch_arm(w);
}

/* Feeds a snapshot to one watch and sends what it decides. */
static void target_watch_update(struct alert_target_watch *w, const struct status_tunnel *snap)
{
	struct alert_target *t = w->target;
	struct alert_decision *decisions;
	double now = clock_now();
	size_t n = 0;

	snprintf(w->host, sizeof(w->host), "%s", snap->host);
	w->port = snap->port;
	decisions = calloc(ALERT_DECISIONS_MAX(snap->n_forwards), sizeof(*decisions));
	if (!decisions || alert_watch_update(&w->state, &t->policy, snap, now, decisions, &n) < 0) {
		log_err("alert %s: out of memory: a change of tunnel %s was missed", t->name,
			w->tunnel);
		n = 0;
	}
	target_watch_act(w, decisions, n, now);
	free(decisions);
	target_watch_arm(w);
}

static void target_watch_destroy(struct alert_target_watch *w)
{
	ev_timer_stop(w->target->alerter->loop, &w->timer);
	list_remove(&w->link);
	alert_watch_finish(&w->state);
	free(w);
}

static struct alert_target_watch *target_watch_find(struct alert_target *t, const char *tunnel)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &t->watches)
	{
		struct alert_target_watch *w = list_entry(pos, struct alert_target_watch, link);

		if (strcmp(w->tunnel, tunnel) == 0)
			return w;
	}
	return NULL;
}

static bool target_wants(const struct alert_target *t, const char *tunnel)
{
	if (t->cfg->n_tunnels == 0)
		return true;
	for (size_t i = 0; i < t->cfg->n_tunnels; i++)
		if (strcmp(t->cfg->tunnels[i], tunnel) == 0)
			return true;
	return false;
}

/* Makes sure `t` watches `snap`'s tunnel (when its filter wants it). */
static int target_watch_sync_one(struct alert_target *t, const struct status_tunnel *snap,
				 const struct config *cfg)
{
	const struct tunnel_config *tc = config_find_tunnel(cfg, snap->name);
	struct alert_target_watch *w = target_watch_find(t, snap->name);

	if (!target_wants(t, snap->name))
		return 0;
	if (!w) {
		w = calloc(1, sizeof(*w));
		if (!w)
			return -ENOMEM;
		if (alert_watch_init(&w->state, &t->policy, snap, clock_now()) < 0) {
			free(w);
			return -ENOMEM;
		}
		w->target = t;
		snprintf(w->tunnel, sizeof(w->tunnel), "%s", snap->name);
		ev_timer_init(&w->timer, target_watch_timer_cb, 1., 0.);
		w->timer.data = w;
		list_insert_tail(&t->watches, &w->link);
	} else {
		alert_watch_set_policy(&w->state, &t->policy, clock_now());
	}
	w->seen = true;
	w->degraded_rtt = tc ? (double)tc->degraded_rtt_ms / 1000.0 : 0;
	/* a new watch, or a restarted tunnel: a new object in its first state */
	target_watch_update(w, snap);
	return 0;
}

int alert_target_watch_sync(struct alert_target *t, const struct config *cfg,
			    const struct status_tunnel *tunnels, size_t n_tunnels)
{
	struct list *pos, *tmp;
	int r = 0;

	list_for_each_safe(pos, tmp, &t->watches)
	{
		list_entry(pos, struct alert_target_watch, link)->seen = false;
	}
	for (size_t i = 0; i < n_tunnels; i++)
		if (target_watch_sync_one(t, &tunnels[i], cfg) < 0)
			r = -ENOMEM;
	list_for_each_safe(pos, tmp, &t->watches)
	{
		struct alert_target_watch *w = list_entry(pos, struct alert_target_watch, link);

		if (!w->seen)
			target_watch_destroy(w);
	}
	return r;
}

void alert_target_watch_update(struct alert_target *t, const struct status_tunnel *snap)
{
	struct alert_target_watch *w = target_watch_find(t, snap->name);

	if (w)
		target_watch_update(w, snap);
}

void alert_target_watch_drop_all(struct alert_target *t)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &t->watches)
	    target_watch_destroy(list_entry(pos, struct alert_target_watch, link));
}
