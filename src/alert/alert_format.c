#include "alert_format.h"
#include "textenc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool alert_event_firing(enum alert_event_kind k)
{
	return k == ALERT_EVENT_DOWN || k == ALERT_EVENT_TARGET_DOWN || k == ALERT_EVENT_DEGRADED ||
	       k == ALERT_EVENT_METRICS_STALE || k == ALERT_EVENT_AUDIT_FAILED;
}

/* The daemon's own events: no tunnel. */
static bool daemon_event(enum alert_event_kind k)
{
	return k == ALERT_EVENT_METRICS_STALE || k == ALERT_EVENT_METRICS_FRESH;
}

/* The events about a forward's target or the tunnel's RTT: they carry forward, target, rtt. */
static bool health_event(enum alert_event_kind k)
{
	return k == ALERT_EVENT_TARGET_DOWN || k == ALERT_EVENT_TARGET_UP ||
	       k == ALERT_EVENT_DEGRADED || k == ALERT_EVENT_RECOVERED;
}

static bool target_event(enum alert_event_kind k)
{
	return k == ALERT_EVENT_TARGET_DOWN || k == ALERT_EVENT_TARGET_UP;
}

void alert_format_rtt_reason(double rtt, double degraded_rtt, char *buf, size_t size)
{
	snprintf(buf, size, "rtt %.0f ms above degraded_rtt %.0f ms", rtt * 1000.0,
		 degraded_rtt * 1000.0);
}

void alert_format_rfc3339(const struct timespec *t, char *buf, size_t size)
{
	struct tm tm;

	if (!gmtime_r(&t->tv_sec, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "1970-01-01T00:00:00Z");
}

static void put_string(FILE *out, const char *s)
{
	fputc('"', out);
	text_put_escaped(out, s, SIZE_MAX, TEXT_ESCAPE_JSON);
	fputc('"', out);
}

static void put_time(FILE *out, const struct timespec *t)
{
	char buf[32];

	alert_format_rfc3339(t, buf, sizeof(buf));
	fprintf(out, "\"%s\"", buf);
}

/* "db.example.com:22", "[fd00::5]:22". */
static void endpoint(const struct alert_event *e, char *buf, size_t size)
{
	bool v6 = strchr(e->host, ':') != NULL;

	snprintf(buf, size, "%s%s%s:%u", v6 ? "[" : "", e->host, v6 ? "]" : "", (unsigned)e->port);
}

/* "12.3s" below a minute, then "3m12s", "2h05m", "3d04h". */
static void duration_text(double seconds, char *buf, size_t size)
{
	unsigned long long s;

	if (seconds < 0)
		seconds = 0;
	if (seconds < 60) {
		snprintf(buf, size, "%.1fs", seconds);
		return;
	}
	s = (unsigned long long)seconds;
	if (s < 3600)
		snprintf(buf, size, "%llum%02llus", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, size, "%lluh%02llum", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, size, "%llud%02lluh", s / 86400, s % 86400 / 3600);
}

/* The JSON text up to a member's value (",\"node\":"), then the value: a string. */
static void put_member(FILE *out, const char *before, const char *s)
{
	fputs(before, out);
	put_string(out, s);
}

/* The same, with null for an empty string. */
static void put_member_or_null(FILE *out, const char *before, const char *s)
{
	fputs(before, out);
	if (s[0])
		put_string(out, s);
	else
		fputs("null", out);
}

static void put_json(FILE *out, const struct alert_event *e)
{
	bool health = health_event(e->kind);

	fprintf(out, "{\"event\":\"%s\",\"tunnel\":", alert_event_str(e->kind));
	put_string(out, e->tunnel);
	if (health) {
		put_member_or_null(out, ",\"forward\":", e->forward);
		put_member_or_null(out, ",\"target\":", e->target);
	}
	put_member(out, ",\"node\":", e->node);
	put_member(out, ",\"host\":", e->host);
	fprintf(out, ",\"port\":%u,\"reason\":", (unsigned)e->port);
	put_string(out, e->reason);
	if (health) {
		fputs(",\"rtt_ms\":", out);
		if (e->rtt_measured)
			fprintf(out, "%.1f", e->rtt * 1000.0);
		else
			fputs("null", out);
	}
	fputs(",\"since\":", out);
	put_time(out, &e->since);
	fprintf(out, ",\"down_for_seconds\":%.1f,\"timestamp\":", e->down_for_seconds);
	put_time(out, &e->timestamp);
	fputc('}', out);
}

/* How the slack format words a condition of the whole tunnel, as it begins and ends. */
struct slack_condition {
	const char *icon;  /* when it begins */
	const char *is;	   /* "is DOWN: REASON" */
	const char *since; /* "(down for 5.0s, since ...)" */
	const char *ended; /* "is UP again after 5.0s down (was: REASON)" */
	const char *state;
};

static const struct slack_condition slack_down = {
    ":red_circle:", "is DOWN", "down for", "is UP again", "down",
};

static const struct slack_condition slack_degraded = {
    ":large_yellow_circle:", "is DEGRADED", "for", "recovered", "degraded",
};

/* Down, up, degraded or recovered. */
static void slack_tunnel_text(const struct alert_event *e, const char *where, const char *dur,
			      const char *since, char *buf, size_t size)
{
	const struct slack_condition *c = health_event(e->kind) ? &slack_degraded : &slack_down;

	if (alert_event_firing(e->kind))
		snprintf(buf, size, "%s moletun on %s: tunnel %s (%s) %s: %s (%s %s, since %s)",
			 c->icon, e->node, e->tunnel, where, c->is, e->reason, c->since, dur,
			 since);
	else
		snprintf(buf, size,
			 ":large_green_circle: moletun on %s: tunnel %s (%s) %s after %s %s (was: "
			 "%s)",
			 e->node, e->tunnel, where, c->ended, dur, c->state, e->reason);
}

/* The one-line message of the slack format (before escaping). */
static void slack_text(const struct alert_event *e, char *buf, size_t size)
{
	char where[300], since[32], dur[32];

	endpoint(e, where, sizeof(where));
	alert_format_rfc3339(&e->since, since, sizeof(since));
	duration_text(e->down_for_seconds, dur, sizeof(dur));
	switch (e->kind) {
	case ALERT_EVENT_DOWN:
	case ALERT_EVENT_UP:
	case ALERT_EVENT_DEGRADED:
	case ALERT_EVENT_RECOVERED:
		slack_tunnel_text(e, where, dur, since, buf, size);
		break;
	case ALERT_EVENT_TARGET_DOWN:
		snprintf(buf, size,
			 ":red_circle: moletun on %s: tunnel %s: target %s of forward %s is "
			 "UNREACHABLE: %s (for %s, since %s)",
			 e->node, e->tunnel, e->target, e->forward, e->reason, dur, since);
		break;
	case ALERT_EVENT_TARGET_UP:
		snprintf(
		    buf, size,
		    ":large_green_circle: moletun on %s: tunnel %s: target %s of forward %s is "
		    "reachable again after %s (was: %s)",
		    e->node, e->tunnel, e->target, e->forward, dur, e->reason);
		break;
	case ALERT_EVENT_METRICS_STALE:
		snprintf(buf, size,
			 ":red_circle: moletun on %s: metrics are STALE: %s (for %s, since %s; "
			 "node_exporter serves an old file)",
			 e->node, e->reason, dur, since);
		break;
	case ALERT_EVENT_METRICS_FRESH:
		snprintf(buf, size,
			 ":large_green_circle: moletun on %s: metrics written again after %s (was: "
			 "%s)",
			 e->node, dur, e->reason);
		break;
	case ALERT_EVENT_AUDIT_FAILED:
		snprintf(buf, size,
			 ":red_circle: moletun on %s: tunnel %s (%s): the sidecar is NOT HARDENED: "
			 "its key can do more than the tunnel's forwards; %s (audited %s; moletun "
			 "audit %s says what fixes each)",
			 e->node, e->tunnel, where, e->reason, since, e->tunnel);
		break;
	default:
		snprintf(buf, size, ":white_circle: moletun on %s: %s", e->node, e->reason);
		break;
	}
}

static void put_slack(FILE *out, const struct alert_event *e)
{
	char text[1536];

	slack_text(e, text, sizeof(text));
	fputs("{\"text\":\"", out);
	text_put_escaped(out, text, SIZE_MAX, TEXT_ESCAPE_SLACK);
	fputs("\"}", out);
}

static const char *alertmanager_name(enum alert_event_kind k)
{
	switch (k) {
	case ALERT_EVENT_DOWN:
	case ALERT_EVENT_UP:
		return "MoletunTunnelDown";
	case ALERT_EVENT_TARGET_DOWN:
	case ALERT_EVENT_TARGET_UP:
		return "MoletunTargetDown";
	case ALERT_EVENT_DEGRADED:
	case ALERT_EVENT_RECOVERED:
		return "MoletunTunnelDegraded";
	case ALERT_EVENT_METRICS_STALE:
	case ALERT_EVENT_METRICS_FRESH:
		return "MoletunMetricsNotWritten";
	case ALERT_EVENT_AUDIT_FAILED:
		return "MoletunSidecarNotHardened";
	default:
		return "MoletunTest";
	}
}

/* Summary and description of a tunnel event's alert (firing and resolved say the same). */
static void alertmanager_text(const struct alert_event *e, char *summary, size_t summary_size,
			      char *description, size_t description_size)
{
	char where[300], dur[32];
	bool firing = alert_event_firing(e->kind);

	endpoint(e, where, sizeof(where));
	duration_text(e->down_for_seconds, dur, sizeof(dur));
	if (daemon_event(e->kind)) {
		snprintf(summary, summary_size, "moletun on %s cannot write its metrics textfile",
			 e->node);
		snprintf(description, description_size, "%s (%s %s)", e->reason,
			 firing ? "stale for" : "was stale for", dur);
	} else if (e->kind == ALERT_EVENT_AUDIT_FAILED) {
		snprintf(summary, summary_size,
			 "The sidecar of SSH tunnel %s on %s is not hardened", e->tunnel, e->node);
		snprintf(description, description_size,
			 "%s: the tunnel's key can do more than its forwards; %s (moletun audit "
			 "%s says what fixes each)",
			 where, e->reason, e->tunnel);
	} else if (target_event(e->kind)) {
		snprintf(summary, summary_size, "Target %s of SSH tunnel %s on %s is unreachable",
			 e->target, e->tunnel, e->node);
		snprintf(description, description_size, "forward %s -> %s: %s (%s %s)", e->forward,
			 e->target, e->reason, firing ? "unreachable for" : "was unreachable for",
			 dur);
	} else if (health_event(e->kind)) {
		snprintf(summary, summary_size, "SSH tunnel %s on %s is degraded", e->tunnel,
			 e->node);
		snprintf(description, description_size, "%s: %s (%s %s)", where, e->reason,
			 firing ? "degraded for" : "was degraded for", dur);
	} else {
		snprintf(summary, summary_size, "SSH tunnel %s on %s is down", e->tunnel, e->node);
		snprintf(description, description_size, "%s: %s (%s %s)", where, e->reason,
			 firing ? "down for" : "was down for", dur);
	}
}

static void put_alertmanager(FILE *out, const struct alert_event *e)
{
	char summary[1024], description[1024];
	struct timespec starts = e->since, ends = e->timestamp;
	bool test = e->kind == ALERT_EVENT_TEST;

	if (test) {
		starts = e->timestamp;
		ends.tv_sec += ALERTMANAGER_TEST_SEC;
		snprintf(summary, sizeof(summary), "moletun test alert from %s", e->node);
		snprintf(description, sizeof(description), "%s", e->reason);
	} else {
		if (e->kind == ALERT_EVENT_AUDIT_FAILED)
			ends.tv_sec += ALERTMANAGER_AUDIT_SEC; /* sent once, not re-sent */
		else if (alert_event_firing(e->kind))
			ends.tv_sec += ALERTMANAGER_VALID_SEC;
		alertmanager_text(e, summary, sizeof(summary), description, sizeof(description));
	}
	fprintf(out, "[{\"labels\":{\"alertname\":\"%s\",", alertmanager_name(e->kind));
	if (!test && !daemon_event(e->kind)) {
		put_member(out, "\"tunnel\":", e->tunnel);
		fputc(',', out);
	}
	if (target_event(e->kind)) {
		put_member(out, "\"forward\":", e->forward);
		put_member(out, ",\"target\":", e->target);
		fputc(',', out);
	}
	put_member(out, "\"instance\":", e->node);
	put_member(out, "},\"annotations\":{\"summary\":", summary);
	put_member(out, ",\"description\":", description);
	fputs("},\"startsAt\":", out);
	put_time(out, &starts);
	fputs(",\"endsAt\":", out);
	put_time(out, &ends);
	fputs("}]", out);
}

int alert_format_payload(enum alert_format format, const struct alert_event *e, FILE *out)
{
	switch (format) {
	case ALERT_FORMAT_JSON:
		put_json(out, e);
		break;
	case ALERT_FORMAT_SLACK:
		put_slack(out, e);
		break;
	case ALERT_FORMAT_ALERTMANAGER:
		put_alertmanager(out, e);
		break;
	}
	return ferror(out) ? -EIO : 0;
}

int alert_format_body(enum alert_format format, const struct alert_event *e, char **ret,
		      size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	int r;

	if (!out)
		return -ENOMEM;
	r = alert_format_payload(format, e, out);
	if (fclose(out) != 0 || r < 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

static bool env_dropped(const char *entry)
{
	static const char *const prefixes[] = {
	    "MOLETUN_",	   "NOTIFY_SOCKET=", "WATCHDOG_PID=",	"WATCHDOG_USEC=",
	    "LISTEN_PID=", "LISTEN_FDS=",    "LISTEN_FDNAMES=",
	};

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(entry, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

void alert_env_free(char **env)
{
	if (!env)
		return;
	for (char **p = env; *p; p++)
		free(*p);
	free(env);
}

int alert_format_env(const struct alert_event *e, const char *alert_name, char *const *base,
		     char ***ret)
{
	char since[32], stamp[32], port[8], down_for[32], rtt[32] = "", *json = NULL;
	size_t n_base = 0, n = 0, json_len;
	char **env;
	int r = -ENOMEM;

	for (char *const *p = base; p && *p; p++)
		n_base++;
	if (alert_format_body(ALERT_FORMAT_JSON, e, &json, &json_len) < 0)
		return -ENOMEM;
	alert_format_rfc3339(&e->since, since, sizeof(since));
	alert_format_rfc3339(&e->timestamp, stamp, sizeof(stamp));
	snprintf(port, sizeof(port), "%u", (unsigned)e->port);
	snprintf(down_for, sizeof(down_for), "%.1f", e->down_for_seconds);
	if (e->rtt_measured)
		snprintf(rtt, sizeof(rtt), "%.1f", e->rtt * 1000.0);
	{
		const char *const ours[][2] = {
		    {"MOLETUN_EVENT", alert_event_str(e->kind)},
		    {"MOLETUN_TUNNEL", e->tunnel},
		    {"MOLETUN_REASON", e->reason},
		    {"MOLETUN_ALERT", alert_name},
		    {"MOLETUN_NODE", e->node},
		    {"MOLETUN_HOST", e->host},
		    {"MOLETUN_PORT", port},
		    {"MOLETUN_SINCE", since},
		    {"MOLETUN_TIMESTAMP", stamp},
		    {"MOLETUN_DOWN_FOR_SECONDS", down_for},
		    {"MOLETUN_JSON", json},
		    {"MOLETUN_FORWARD", e->forward},
		    {"MOLETUN_TARGET", e->target},
		    {"MOLETUN_RTT_MS", rtt},
		};
		/* the last three only for the events whose json has them */
		const size_t n_ours =
		    sizeof(ours) / sizeof(ours[0]) - (health_event(e->kind) ? 0 : 3);

		env = calloc(n_base + n_ours + 1, sizeof(*env));
		if (!env)
			goto out;
		for (size_t i = 0; i < n_base; i++) {
			if (env_dropped(base[i]))
				continue;
			env[n] = strdup(base[i]);
			if (!env[n++])
				goto fail;
		}
		for (size_t i = 0; i < n_ours; i++) {
			if (asprintf(&env[n], "%s=%s", ours[i][0], ours[i][1]) < 0) {
				env[n] = NULL;
				goto fail;
			}
			n++;
		}
	}
	*ret = env;
	r = 0;
	goto out;
fail:
	alert_env_free(env);
out:
	free(json);
	return r;
}
