#include "alert_watch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ends a condition without an event: not holding, nothing fired, nothing scheduled. */
static void debounce_clear(struct alert_debounce *d)
{
	*d = (struct alert_debounce){0};
}

enum evidence {
	EVIDENCE_NONE,
	EVIDENCE_HOLDS,
	EVIDENCE_CLEAR,
};

/* One health condition against the latest evidence; the action as alert_debounce_update. */
static enum alert_action condition_update(struct alert_debounce *d, const struct alert_policy *p,
					  enum evidence e, double now)
{
	switch (e) {
	case EVIDENCE_HOLDS:
		return alert_debounce_update(d, p, false, false, now);
	case EVIDENCE_CLEAR:
		return alert_debounce_update(d, p, true, false, now);
	case EVIDENCE_NONE:
		break;
	}
	/* a condition must be seen holding for down_after; a fired one waits for evidence */
	if (d->down && !d->fired)
		debounce_clear(d);
	return ALERT_ACTION_NONE;
}

static void health_clear(struct alert_watch_state *s)
{
	debounce_clear(&s->degraded);
	for (size_t i = 0; i < s->n_forwards; i++)
		debounce_clear(&s->forwards[i].debounce);
}

static bool forward_is(const struct alert_forward_watch *f, const struct status_forward *sf)
{
	return strcmp(f->listen, sf->listen) == 0 && strcmp(f->target, sf->target) == 0;
}

static void forward_watch_init(struct alert_forward_watch *f, const struct status_forward *sf)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->listen, sizeof(f->listen), "%s", sf->listen);
	snprintf(f->target, sizeof(f->target), "%s", sf->target);
}

/* Lines s->forwards up with snap's, keeping the debounce of each forward still there. */
static int sync_forwards(struct alert_watch_state *s, const struct status_tunnel *snap)
{
	struct alert_forward_watch *next;
	bool same = s->n_forwards == snap->n_forwards;

	for (size_t i = 0; same && i < s->n_forwards; i++)
		same = forward_is(&s->forwards[i], &snap->forwards[i]);
	if (same)
		return 0;
	next = calloc(snap->n_forwards ? snap->n_forwards : 1, sizeof(*next));
	if (!next)
		return -ENOMEM;
	for (size_t i = 0; i < snap->n_forwards; i++) {
		forward_watch_init(&next[i], &snap->forwards[i]);
		for (size_t j = 0; j < s->n_forwards; j++) {
			if (forward_is(&s->forwards[j], &snap->forwards[i])) {
				next[i] = s->forwards[j];
				break;
			}
		}
	}
	free(s->forwards);
	s->forwards = next;
	s->n_forwards = snap->n_forwards;
	return 0;
}

/* The failed checks of a verdict as one line: "session, direct_tcpip 127.0.0.1:22". */
static void sidecar_failed_text(const struct status_sidecar *sc, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sc->n_failed && i < SIDECAR_FAILED_MAX && used + 1 < size; i++) {
		snprintf(buf + used, size - used, "%s%.*s", i ? ", " : "",
			 (int)sizeof(sc->failed[i]) - 1, sc->failed[i]);
		used += strlen(buf + used);
	}
	if (sc->n_failed > SIDECAR_FAILED_MAX && used + 1 < size)
		snprintf(buf + used, size - used, " and %zu more",
			 sc->n_failed - SIDECAR_FAILED_MAX);
}

/* A verdict came: audit_failed when it is a change to not_hardened. */
static size_t sidecar_update(struct alert_watch_state *s, const struct status_sidecar *sc,
			     double now, struct alert_decision *out, size_t n)
{
	bool fails = sc->state == SIDECAR_NOT_HARDENED;

	if (sc->state == SIDECAR_UNKNOWN)
		return n;
	if (fails) {
		sidecar_failed_text(sc, s->sidecar_failed, sizeof(s->sidecar_failed));
		if (s->sidecar != SIDECAR_NOT_HARDENED) {
			s->sidecar_since = now;
			out[n++] = (struct alert_decision){.kind = ALERT_EVENT_AUDIT_FAILED};
		}
	}
	s->sidecar = sc->state;
	return n;
}

int alert_watch_init(struct alert_watch_state *s, const struct alert_policy *p,
		     const struct status_tunnel *snap, double now)
{
	memset(s, 0, sizeof(*s));
	alert_debounce_init(&s->tunnel, p, snap->state == TUNNEL_UP, now);
	/* a verdict older than the watch was not a change it saw */
	s->sidecar = snap->sidecar.state;
	return sync_forwards(s, snap);
}

void alert_watch_finish(struct alert_watch_state *s)
{
	free(s->forwards);
	s->forwards = NULL;
	s->n_forwards = 0;
}

static size_t decide(struct alert_decision *out, size_t n, enum alert_action action,
		     enum alert_event_kind firing, enum alert_event_kind resolving, size_t forward)
{
	switch (action) {
	case ALERT_ACTION_NONE:
		return n;
	case ALERT_ACTION_DOWN:
	case ALERT_ACTION_RESEND:
		out[n] = (struct alert_decision){
		    .kind = firing, .forward = forward, .resend = action == ALERT_ACTION_RESEND};
		return n + 1;
	case ALERT_ACTION_UP:
		out[n] = (struct alert_decision){.kind = resolving, .forward = forward};
		return n + 1;
	}
	return n;
}

static enum evidence target_evidence(enum target_state state)
{
	switch (state) {
	case TARGET_UNREACHABLE:
		return EVIDENCE_HOLDS;
	case TARGET_REACHABLE:
		return EVIDENCE_CLEAR;
	case TARGET_UNKNOWN:
		break;
	}
	return EVIDENCE_NONE;
}

static enum evidence degraded_evidence(enum tunnel_health health)
{
	switch (health) {
	case HEALTH_DEGRADED:
		return EVIDENCE_HOLDS;
	case HEALTH_OK:
		return EVIDENCE_CLEAR;
	case HEALTH_TARGET_DOWN: /* wins over degraded: the RTT is not judged */
	case HEALTH_DOWN:
		break;
	}
	return EVIDENCE_NONE;
}

int alert_watch_update(struct alert_watch_state *s, const struct alert_policy *p,
		       const struct status_tunnel *snap, double now, struct alert_decision *out,
		       size_t *ret_n)
{
	bool up = snap->state == TUNNEL_UP;
	enum alert_action action;
	enum evidence e;
	size_t n = 0;

	*ret_n = 0;
	if (sync_forwards(s, snap) < 0)
		return -ENOMEM;
	if (!up) {
		if (!s->tunnel.down)
			s->reason[0] = '\0'; /* a new outage */
		if (snap->last_error[0])
			snprintf(s->reason, sizeof(s->reason), "%s", snap->last_error);
	}
	n = sidecar_update(s, &snap->sidecar, now, out, n);
	action = alert_debounce_update(&s->tunnel, p, up, snap->auth_failure, now);
	n = decide(out, n, action, ALERT_EVENT_DOWN, ALERT_EVENT_UP, 0);
	if (action == ALERT_ACTION_DOWN)
		health_clear(s);
	if (!up) {
		*ret_n = n;
		return 0;
	}
	s->rtt_measured = snap->rtt_measured;
	s->rtt = snap->rtt;
	for (size_t i = 0; i < s->n_forwards; i++) {
		struct alert_forward_watch *f = &s->forwards[i];
		const struct status_forward *sf = &snap->forwards[i];
		e = target_evidence(sf->target_state);
		if (e == EVIDENCE_HOLDS) {
			if (!f->debounce.down)
				f->error[0] = '\0';
			if (sf->target_error[0])
				snprintf(f->error, sizeof(f->error), "%s", sf->target_error);
		}
		n = decide(out, n, condition_update(&f->debounce, p, e, now),
			   ALERT_EVENT_TARGET_DOWN, ALERT_EVENT_TARGET_UP, i);
	}
	e = degraded_evidence(snap->health);
	if (e == EVIDENCE_HOLDS && (!s->degraded.down || s->rtt > s->rtt_peak))
		s->rtt_peak = s->rtt;
	action = condition_update(&s->degraded, p, e, now);
	n = decide(out, n, action, ALERT_EVENT_DEGRADED, ALERT_EVENT_RECOVERED, 0);
	*ret_n = n;
	return 0;
}

size_t alert_watch_expire(struct alert_watch_state *s, const struct alert_policy *p, double now,
			  struct alert_decision *out)
{
	enum alert_action action = alert_debounce_expire(&s->tunnel, p, now);
	size_t n = decide(out, 0, action, ALERT_EVENT_DOWN, ALERT_EVENT_UP, 0);

	if (action == ALERT_ACTION_DOWN)
		health_clear(s);
	if (s->tunnel.down)
		return n; /* suspended */
	for (size_t i = 0; i < s->n_forwards; i++)
		n = decide(out, n, alert_debounce_expire(&s->forwards[i].debounce, p, now),
			   ALERT_EVENT_TARGET_DOWN, ALERT_EVENT_TARGET_UP, i);
	return decide(out, n, alert_debounce_expire(&s->degraded, p, now), ALERT_EVENT_DEGRADED,
		      ALERT_EVENT_RECOVERED, 0);
}

static double earliest(double a, double b)
{
	if (a == 0)
		return b;
	if (b == 0)
		return a;
	return a < b ? a : b;
}

double alert_watch_due(const struct alert_watch_state *s)
{
	double due = s->tunnel.due;

	if (s->tunnel.down)
		return due;
	for (size_t i = 0; i < s->n_forwards; i++)
		due = earliest(due, s->forwards[i].debounce.due);
	return earliest(due, s->degraded.due);
}

void alert_watch_set_policy(struct alert_watch_state *s, const struct alert_policy *p, double now)
{
	alert_debounce_set_policy(&s->tunnel, p, now);
	alert_debounce_set_policy(&s->degraded, p, now);
	for (size_t i = 0; i < s->n_forwards; i++)
		alert_debounce_set_policy(&s->forwards[i].debounce, p, now);
}
