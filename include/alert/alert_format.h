#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "status.h"

/*
 * Alertmanager forgets a firing alert whose endsAt has passed, so a firing alert is re-sent
 * every ALERTMANAGER_RESEND_SEC with endsAt ALERTMANAGER_VALID_SEC ahead (four re-sends,
 * as Prometheus does): a lost re-send or two never resolves it, a dead moletun does.
 */
#define ALERTMANAGER_RESEND_SEC 60
#define ALERTMANAGER_VALID_SEC	(4 * ALERTMANAGER_RESEND_SEC)
/* A test alert shows up in Alertmanager and resolves itself after this long. */
#define ALERTMANAGER_TEST_SEC 300
/* audit_failed is sent once per change (not re-sent): Alertmanager keeps it this long, a
 * day like audit_interval's default; the Prometheus rule on moletun_tunnel_sidecar_hardened
 * keeps firing for as long as it holds. */
#define ALERTMANAGER_AUDIT_SEC 86400

/* True for down, target_down, degraded, metrics_stale and audit_failed: the events that open
 * a condition (sent whatever send_resolved says). */
bool alert_event_firing(enum alert_event_kind k);

/*
 * Everything a payload says; a plain copy, so a queued event outlives its tunnel. For
 * target_* and degraded/recovered events, since and down_for_seconds are those of the
 * condition (unreachable, degraded), not of a tunnel outage.
 */
struct alert_event {
	enum alert_event_kind kind;
	char tunnel[128]; /* "" for a test event and the daemon's own (metrics_*) */
	char node[256];	  /* this machine's hostname */
	char host[256];	  /* the tunnel's SSH server ("" for a test event, metrics_*) */
	uint16_t port;
	char forward[300];	   /* target_*: the forward's listen address, else "" */
	char target[300];	   /* target_*: the forward's HOST:PORT, else "" */
	char reason[256];	   /* why the tunnel (target) is (was) down, or degraded */
	bool rtt_measured;	   /* rtt is known */
	double rtt;		   /* seconds: the tunnel's smoothed keepalive RTT */
	struct timespec since;	   /* CLOCK_REALTIME: the outage (condition) began */
	struct timespec timestamp; /* CLOCK_REALTIME: the event was raised */
	double down_for_seconds;   /* firing: so far; resolving: the whole outage */
};

/* "rtt 1234 ms above degraded_rtt 1000 ms": the reason of a degraded event. */
void alert_format_rtt_reason(double rtt, double degraded_rtt, char *buf, size_t size);

/* UTC, second precision: "2024-05-01T12:00:00Z". */
void alert_format_rfc3339(const struct timespec *t, char *buf, size_t size);

/*
 * Writes the request body for `format` to `out`; returns 0 or -EIO on a stream error.
 * Pure. Strings are escaped for JSON; invalid UTF-8 becomes U+FFFD.
 *
 * json:         {"event":"down","tunnel":"primary","node":"web1","host":"db.example.com",
 *                "port":22,"reason":"connection refused","since":"2024-05-01T12:00:00Z",
 *                "down_for_seconds":12.3,"timestamp":"2024-05-01T12:00:12Z"}
 *               target_* and degraded/recovered events add "forward" and "target" (null for
 *               degraded/recovered) after "tunnel", and "rtt_ms" (null until measured)
 *               after "reason".
 * slack:        {"text":"..."} with one readable line (&, <, > escaped as Slack wants).
 * alertmanager: [{"labels":{"alertname":"MoletunTunnelDown","tunnel":..,"instance":NODE},
 *                "annotations":{"summary":..,"description":..},"startsAt":SINCE,
 *                "endsAt":..}] where endsAt is TIMESTAMP + ALERTMANAGER_VALID_SEC while
 *                firing and TIMESTAMP once resolved; target_down/target_up are
 *                "MoletunTargetDown" with labels tunnel, forward, target and instance,
 *                degraded/recovered "MoletunTunnelDegraded"; metrics_stale/metrics_fresh
 *                "MoletunMetricsNotWritten" (labels instance only); audit_failed
 *                "MoletunSidecarNotHardened" (labels tunnel and instance, endsAt TIMESTAMP
 *                + ALERTMANAGER_AUDIT_SEC, reason the failed checks); a test event is
 *                "MoletunTest".
 */
int alert_format_payload(enum alert_format format, const struct alert_event *e, FILE *out);

/* The body as a NUL-terminated heap string (0 or -ENOMEM). */
int alert_format_body(enum alert_format format, const struct alert_event *e, char **ret,
		      size_t *ret_len);

/*
 * The environment of an exec target: `base` (NULL-terminated, e.g. environ) without
 * systemd's NOTIFY_SOCKET, WATCHDOG_*, LISTEN_* and without any MOLETUN_* variables, then
 * MOLETUN_EVENT, MOLETUN_TUNNEL, MOLETUN_REASON, MOLETUN_ALERT, MOLETUN_NODE, MOLETUN_HOST,
 * MOLETUN_PORT, MOLETUN_SINCE, MOLETUN_TIMESTAMP, MOLETUN_DOWN_FOR_SECONDS and
 * MOLETUN_JSON (the json payload); target_* and degraded/recovered events also get
 * MOLETUN_FORWARD, MOLETUN_TARGET and MOLETUN_RTT_MS (each "" when it does not apply).
 * Returns 0 or -ENOMEM; free with alert_env_free().
 */
int alert_format_env(const struct alert_event *e, const char *alert_name, char *const *base,
		     char ***ret);
void alert_env_free(char **env);
