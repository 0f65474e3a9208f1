#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "config.h"

/*
 * Alertmanager forgets a firing alert whose endsAt has passed, so a firing alert is re-sent
 * every ALERTMANAGER_RESEND_SEC with endsAt ALERTMANAGER_VALID_SEC ahead (four re-sends,
 * as Prometheus does): a lost re-send or two never resolves it, a dead moletun does.
 */
#define ALERTMANAGER_RESEND_SEC 60
#define ALERTMANAGER_VALID_SEC	(4 * ALERTMANAGER_RESEND_SEC)
/* A test alert shows up in Alertmanager and resolves itself after this long. */
#define ALERTMANAGER_TEST_SEC 300

enum alert_event_kind {
	ALERT_EVENT_DOWN,
	ALERT_EVENT_UP,
	ALERT_EVENT_TEST, /* moletun ctl alert-test */
	ALERT_EVENT_COUNT,
};

/* "down", "up", "test": the names used in payloads, env, logs and metrics. */
const char *alert_event_str(enum alert_event_kind k);

/* Everything a payload says; a plain copy, so a queued event outlives its tunnel. */
struct alert_event {
	enum alert_event_kind kind;
	char tunnel[128]; /* "" for a test event */
	char node[256];	  /* this machine's hostname */
	char host[256];	  /* the tunnel's SSH server ("" for a test event) */
	uint16_t port;
	char reason[256];	   /* why the tunnel is (was) down */
	struct timespec since;	   /* CLOCK_REALTIME: the outage began */
	struct timespec timestamp; /* CLOCK_REALTIME: the event was raised */
	double down_for_seconds;   /* down: so far; up: the whole outage */
};

/* UTC, second precision: "2024-05-01T12:00:00Z". */
void alert_format_rfc3339(const struct timespec *t, char *buf, size_t size);

/*
 * Writes the request body for `format` to `out`; returns 0 or -EIO on a stream error.
 * Pure. Strings are escaped for JSON; invalid UTF-8 becomes U+FFFD.
 *
 * json:         {"event":"down","tunnel":"primary","node":"web1","host":"db.example.com",
 *                "port":22,"reason":"connection refused","since":"2024-05-01T12:00:00Z",
 *                "down_for_seconds":12.3,"timestamp":"2024-05-01T12:00:12Z"}
 * slack:        {"text":"..."} with one readable line (&, <, > escaped as Slack wants).
 * alertmanager: [{"labels":{"alertname":"MoletunTunnelDown","tunnel":..,"instance":NODE},
 *                "annotations":{"summary":..,"description":..},"startsAt":SINCE,
 *                "endsAt":..}] where endsAt is TIMESTAMP + ALERTMANAGER_VALID_SEC while
 *                firing and TIMESTAMP once resolved; a test event is "MoletunTest".
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
 * MOLETUN_JSON (the json payload). Returns 0 or -ENOMEM; free with alert_env_free().
 */
int alert_format_env(const struct alert_event *e, const char *alert_name, char *const *base,
		     char ***ret);
void alert_env_free(char **env);
