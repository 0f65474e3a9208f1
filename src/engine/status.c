#include "status.h"

#include <stdlib.h>

static const char *const tunnel_state_names[] = {
    [TUNNEL_CONNECTING] = "connecting",
    [TUNNEL_UP] = "up",
    [TUNNEL_BACKOFF] = "backoff",
};

const char *tunnel_state_str(enum tunnel_state s)
{
	if ((unsigned)s >= sizeof(tunnel_state_names) / sizeof(tunnel_state_names[0]))
		return "unknown";
	return tunnel_state_names[s];
}

static const char *const reject_reason_names[] = {
    [REJECT_MAX_CONNECTIONS] = "max_connections",
    [REJECT_DOWN] = "down",
    [REJECT_MEMORY] = "memory",
};

const char *reject_reason_str(enum reject_reason r)
{
	if ((unsigned)r >= sizeof(reject_reason_names) / sizeof(reject_reason_names[0]))
		return "unknown";
	return reject_reason_names[r];
}

const char *target_state_str(enum target_state s)
{
	switch (s) {
	case TARGET_REACHABLE:
		return "reachable";
	case TARGET_UNREACHABLE:
		return "unreachable";
	case TARGET_UNKNOWN:
		break;
	}
	return "unknown";
}

const char *sidecar_state_str(enum sidecar_state s)
{
	switch (s) {
	case SIDECAR_HARDENED:
		return "hardened";
	case SIDECAR_NOT_HARDENED:
		return "not_hardened";
	case SIDECAR_UNKNOWN:
		break;
	}
	return "unknown";
}

const char *tunnel_health_str(enum tunnel_health h)
{
	switch (h) {
	case HEALTH_OK:
		return "ok";
	case HEALTH_DEGRADED:
		return "degraded";
	case HEALTH_TARGET_DOWN:
		return "target_down";
	case HEALTH_DOWN:
		break;
	}
	return "down";
}

static const char *const alert_event_names[] = {
    [ALERT_EVENT_DOWN] = "down",
    [ALERT_EVENT_UP] = "up",
    [ALERT_EVENT_TARGET_DOWN] = "target_down",
    [ALERT_EVENT_TARGET_UP] = "target_up",
    [ALERT_EVENT_DEGRADED] = "degraded",
    [ALERT_EVENT_RECOVERED] = "recovered",
    [ALERT_EVENT_TEST] = "test",
    [ALERT_EVENT_METRICS_STALE] = "metrics_stale",
    [ALERT_EVENT_METRICS_FRESH] = "metrics_fresh",
    [ALERT_EVENT_AUDIT_FAILED] = "audit_failed",
};

const char *alert_event_str(enum alert_event_kind k)
{
	if ((unsigned)k >= sizeof(alert_event_names) / sizeof(alert_event_names[0]))
		return "unknown";
	return alert_event_names[k];
}

void status_memory_fill(struct status_memory *m)
{
	m->limit = memacct_limit();
	m->used = memacct_used();
	m->peak = memacct_peak();
	for (int k = 0; k < MEMACCT_KINDS; k++)
		m->by_kind[k] = memacct_used_kind(k);
	m->stage = memacct_stage();
}

void status_free(struct status *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_tunnels; i++)
		free(s->tunnels[i].forwards);
	free(s->tunnels);
	s->tunnels = NULL;
	s->n_tunnels = 0;
	free(s->alerts);
	s->alerts = NULL;
	s->n_alerts = 0;
}

void status_tunnel_set_via(struct status_tunnel *t, const struct jump_hop *hops, size_t n)
{
	t->n_via = n < JUMP_HOPS_MAX ? n : JUMP_HOPS_MAX;
	for (size_t i = 0; i < t->n_via; i++)
		jumpspec_format_hop(&hops[i], t->via[i], sizeof(t->via[i]));
}
