#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alert_format.h"

#define T0 1714564800 /* 2024-05-01T12:00:00Z */

static struct alert_event sample(enum alert_event_kind kind)
{
	struct alert_event e = {.kind = kind, .port = 22, .down_for_seconds = 12.3};

	snprintf(e.tunnel, sizeof(e.tunnel), "primary");
	snprintf(e.node, sizeof(e.node), "web1");
	snprintf(e.host, sizeof(e.host), "db.example.com");
	snprintf(e.reason, sizeof(e.reason), "connection refused");
	e.since.tv_sec = T0;
	e.timestamp.tv_sec = T0 + 12;
	e.timestamp.tv_nsec = 300000000;
	return e;
}

static char *body(enum alert_format f, const struct alert_event *e)
{
	char *buf = NULL;
	size_t len = 0;

	assert_int_equal(alert_format_body(f, e, &buf, &len), 0);
	assert_int_equal(strlen(buf), len);
	return buf;
}

static void assert_body(enum alert_format f, const struct alert_event *e, const char *want)
{
	char *got = body(f, e);

	assert_string_equal(got, want);
	free(got);
}

static void test_event_names(void **state)
{
	assert_string_equal(alert_event_str(ALERT_EVENT_DOWN), "down");
	assert_string_equal(alert_event_str(ALERT_EVENT_UP), "up");
	assert_string_equal(alert_event_str(ALERT_EVENT_TARGET_DOWN), "target_down");
	assert_string_equal(alert_event_str(ALERT_EVENT_TARGET_UP), "target_up");
	assert_string_equal(alert_event_str(ALERT_EVENT_DEGRADED), "degraded");
	assert_string_equal(alert_event_str(ALERT_EVENT_RECOVERED), "recovered");
	assert_string_equal(alert_event_str(ALERT_EVENT_TEST), "test");
	assert_string_equal(alert_event_str(ALERT_EVENT_METRICS_STALE), "metrics_stale");
	assert_string_equal(alert_event_str(ALERT_EVENT_METRICS_FRESH), "metrics_fresh");
	assert_string_equal(alert_event_str(ALERT_EVENT_AUDIT_FAILED), "audit_failed");
	assert_true(alert_event_firing(ALERT_EVENT_AUDIT_FAILED));
	assert_true(alert_event_firing(ALERT_EVENT_METRICS_STALE));
	assert_false(alert_event_firing(ALERT_EVENT_METRICS_FRESH));
	assert_true(alert_event_firing(ALERT_EVENT_DOWN));
	assert_true(alert_event_firing(ALERT_EVENT_TARGET_DOWN));
	assert_true(alert_event_firing(ALERT_EVENT_DEGRADED));
	assert_false(alert_event_firing(ALERT_EVENT_UP));
	assert_false(alert_event_firing(ALERT_EVENT_TARGET_UP));
	assert_false(alert_event_firing(ALERT_EVENT_RECOVERED));
	assert_false(alert_event_firing(ALERT_EVENT_TEST));
	assert_string_equal(alert_event_str(ALERT_EVENT_COUNT), "unknown");
}

static void test_rfc3339(void **state)
{
	struct timespec t = {.tv_sec = T0 + 3661, .tv_nsec = 999999999};
	char buf[32];

	alert_format_rfc3339(&t, buf, sizeof(buf));
	assert_string_equal(buf, "2024-05-01T13:01:01Z");
	t.tv_sec = 0;
	alert_format_rfc3339(&t, buf, sizeof(buf));
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
}

static void test_json_down_and_up(void **state)
{
	struct alert_event e = sample(ALERT_EVENT_DOWN);

	assert_body(ALERT_FORMAT_JSON, &e,
		    "{\"event\":\"down\",\"tunnel\":\"primary\",\"node\":\"web1\","
		    "\"host\":\"db.example.com\",\"port\":22,\"reason\":\"connection refused\","
		    "\"since\":\"2024-05-01T12:00:00Z\",\"down_for_seconds\":12.3,"
		    "\"timestamp\":\"2024-05-01T12:00:12Z\"}");
	e = sample(ALERT_EVENT_UP);
	e.down_for_seconds = 3725.04;
	assert_body(ALERT_FORMAT_JSON, &e,
		    "{\"event\":\"up\",\"tunnel\":\"primary\",\"node\":\"web1\","
		    "\"host\":\"db.example.com\",\"port\":22,\"reason\":\"connection refused\","
		    "\"since\":\"2024-05-01T12:00:00Z\",\"down_for_seconds\":3725.0,"
		    "\"timestamp\":\"2024-05-01T12:00:12Z\"}");
}

static void test_json_test_event(void **state)
{
	struct alert_event e = {.kind = ALERT_EVENT_TEST};

	snprintf(e.node, sizeof(e.node), "web1");
	snprintf(e.reason, sizeof(e.reason), "test event sent by moletun ctl alert-test");
	e.since.tv_sec = T0;
	e.timestamp.tv_sec = T0;
	assert_body(ALERT_FORMAT_JSON, &e,
		    "{\"event\":\"test\",\"tunnel\":\"\",\"node\":\"web1\",\"host\":\"\","
		    "\"port\":0,\"reason\":\"test event sent by moletun ctl alert-test\","
		    "\"since\":\"2024-05-01T12:00:00Z\",\"down_for_seconds\":0.0,"
		    "\"timestamp\":\"2024-05-01T12:00:00Z\"}");
}

/* Reasons come from servers and libraries: quotes, controls and bad UTF-8 stay valid JSON. */
static void test_json_escaping(void **state)
{
	struct alert_event e = sample(ALERT_EVENT_DOWN);
	char *got, *reason;

	snprintf(e.reason, sizeof(e.reason), "say \"hi\"\\\n\t\r\x01\x7f caf\xc3\xa9 \xff\xc3 <&>");
	got = body(ALERT_FORMAT_JSON, &e);
	reason = strstr(got, "\"reason\":");
	assert_non_null(reason);
	assert_memory_equal(
	    reason,
	    "\"reason\":\"say \\\"hi\\\"\\\\\\n\\t\\r\\u0001\\u007f caf\xc3\xa9 "
	    "\xef\xbf\xbd\xef\xbf\xbd <&>\",",
	    strlen("\"reason\":\"say \\\"hi\\\"\\\\\\n\\t\\r\\u0001\\u007f caf\xc3\xa9 "
		   "\xef\xbf\xbd\xef\xbf\xbd <&>\","));
	free(got);
}

static void test_slack(void **state)
{
	struct alert_event e = sample(ALERT_EVENT_DOWN);

	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":red_circle: moletun on web1: tunnel primary (db.example.com:22) "
		    "is DOWN: connection refused (down for 12.3s, since 2024-05-01T12:00:00Z)\"}");
	e = sample(ALERT_EVENT_UP);
	e.down_for_seconds = 192.5;
	snprintf(e.host, sizeof(e.host), "fd00::5");
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":large_green_circle: moletun on web1: tunnel primary "
		    "([fd00::5]:22) is UP again after 3m12s down (was: connection refused)\"}");
	e.down_for_seconds = 2 * 3600 + 5 * 60;
	snprintf(e.reason, sizeof(e.reason), "a <b> & \"c\"");
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":large_green_circle: moletun on web1: tunnel primary "
		    "([fd00::5]:22) is UP again after 2h05m down (was: a &lt;b&gt; &amp; "
		    "\\\"c\\\")\"}");
	e.kind = ALERT_EVENT_TEST;
	snprintf(e.reason, sizeof(e.reason), "test event sent by moletun ctl alert-test");
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":white_circle: moletun on web1: test event sent by moletun ctl "
		    "alert-test\"}");
}

/* The daemon's own event: no tunnel, host or rtt; Alertmanager labels it by instance. */
static void test_metrics_stale(void **state)
{
	struct alert_event e = {.kind = ALERT_EVENT_METRICS_STALE};

	snprintf(e.node, sizeof(e.node), "web1");
	snprintf(e.reason, sizeof(e.reason),
		 "metrics_textfile /x/moletun.prom not written: "
		 "Operation not permitted");
	e.since.tv_sec = T0;
	e.timestamp.tv_sec = T0 + 12;
	e.down_for_seconds = 12.3;
	assert_body(ALERT_FORMAT_JSON, &e,
		    "{\"event\":\"metrics_stale\",\"tunnel\":\"\",\"node\":\"web1\",\"host\":\"\","
		    "\"port\":0,\"reason\":\"metrics_textfile /x/moletun.prom not written: "
		    "Operation not permitted\",\"since\":\"2024-05-01T12:00:00Z\","
		    "\"down_for_seconds\":12.3,\"timestamp\":\"2024-05-01T12:00:12Z\"}");
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":red_circle: moletun on web1: metrics are STALE: metrics_textfile "
		    "/x/moletun.prom not written: Operation not permitted (for 12.3s, since "
		    "2024-05-01T12:00:00Z; node_exporter serves an old file)\"}");
	assert_body(
	    ALERT_FORMAT_ALERTMANAGER, &e,
	    "[{\"labels\":{\"alertname\":\"MoletunMetricsNotWritten\",\"instance\":\"web1\"},"
	    "\"annotations\":{\"summary\":\"moletun on web1 cannot write its metrics "
	    "textfile\",\"description\":\"metrics_textfile /x/moletun.prom not written: "
	    "Operation not permitted (stale for 12.3s)\"},\"startsAt\":"
	    "\"2024-05-01T12:00:00Z\",\"endsAt\":\"2024-05-01T12:04:12Z\"}]");
	e.kind = ALERT_EVENT_METRICS_FRESH;
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":large_green_circle: moletun on web1: metrics written again "
		    "after 12.3s (was: metrics_textfile /x/moletun.prom not written: Operation not "
		    "permitted)\"}");
	assert_body(
	    ALERT_FORMAT_ALERTMANAGER, &e,
	    "[{\"labels\":{\"alertname\":\"MoletunMetricsNotWritten\",\"instance\":\"web1\"},"
	    "\"annotations\":{\"summary\":\"moletun on web1 cannot write its metrics "
	    "textfile\",\"description\":\"metrics_textfile /x/moletun.prom not written: "
	    "Operation not permitted (was stale for 12.3s)\"},\"startsAt\":"
	    "\"2024-05-01T12:00:00Z\",\"endsAt\":\"2024-05-01T12:00:12Z\"}]");
}

static void test_alertmanager(void **state)
{
	struct alert_event e = sample(ALERT_EVENT_DOWN);

	/* firing: endsAt four re-send intervals ahead */
	assert_body(ALERT_FORMAT_ALERTMANAGER, &e,
		    "[{\"labels\":{\"alertname\":\"MoletunTunnelDown\",\"tunnel\":\"primary\","
		    "\"instance\":\"web1\"},\"annotations\":{\"summary\":\"SSH tunnel primary on "
		    "web1 is down\",\"description\":\"db.example.com:22: connection refused (down "
		    "for 12.3s)\"},\"startsAt\":\"2024-05-01T12:00:00Z\","
		    "\"endsAt\":\"2024-05-01T12:04:12Z\"}]");
	/* resolved: endsAt is the moment it came back */
	e = sample(ALERT_EVENT_UP);
	assert_body(ALERT_FORMAT_ALERTMANAGER, &e,
		    "[{\"labels\":{\"alertname\":\"MoletunTunnelDown\",\"tunnel\":\"primary\","
		    "\"instance\":\"web1\"},\"annotations\":{\"summary\":\"SSH tunnel primary on "
		    "web1 is down\",\"description\":\"db.example.com:22: connection refused (was "
		    "down for 12.3s)\"},\"startsAt\":\"2024-05-01T12:00:00Z\","
		    "\"endsAt\":\"2024-05-01T12:00:12Z\"}]");
	e.kind = ALERT_EVENT_TEST;
	snprintf(e.reason, sizeof(e.reason), "test");
	assert_body(ALERT_FORMAT_ALERTMANAGER, &e,
		    "[{\"labels\":{\"alertname\":\"MoletunTest\",\"instance\":\"web1\"},"
		    "\"annotations\":{\"summary\":\"moletun test alert from web1\","
		    "\"description\":\"test\"},\"startsAt\":\"2024-05-01T12:00:12Z\","
		    "\"endsAt\":\"2024-05-01T12:05:12Z\"}]");
}

/* A target event: forward 127.0.0.1:5433 -> pg_main:5432 of tunnel primary. */
static struct alert_event target_sample(enum alert_event_kind kind)
{
	struct alert_event e = sample(kind);

	snprintf(e.forward, sizeof(e.forward), "127.0.0.1:5433");
	snprintf(e.target, sizeof(e.target), "pg_main:5432");
	snprintf(e.reason, sizeof(e.reason), "connect failed: Connection refused");
	e.rtt_measured = true;
	e.rtt = 0.01234;
	return e;
}

static struct alert_event degraded_sample(enum alert_event_kind kind)
{
	struct alert_event e = sample(kind);

	alert_format_rtt_reason(1.2344, 1.0, e.reason, sizeof(e.reason));
	e.rtt_measured = true;
	e.rtt = kind == ALERT_EVENT_DEGRADED ? 1.5 : 0.25;
	return e;
}

static void test_rtt_reason(void **state)
{
	char buf[64];

	alert_format_rtt_reason(1.2344, 1.0, buf, sizeof(buf));
	assert_string_equal(buf, "rtt 1234 ms above degraded_rtt 1000 ms");
	alert_format_rtt_reason(0.0512, 0.05, buf, sizeof(buf));
	assert_string_equal(buf, "rtt 51 ms above degraded_rtt 50 ms");
}

static void test_json_health_events(void **state)
{
	struct alert_event e = target_sample(ALERT_EVENT_TARGET_DOWN);

	assert_body(
	    ALERT_FORMAT_JSON, &e,
	    "{\"event\":\"target_down\",\"tunnel\":\"primary\",\"forward\":\"127.0.0.1:5433\","
	    "\"target\":\"pg_main:5432\",\"node\":\"web1\",\"host\":\"db.example.com\","
	    "\"port\":22,\"reason\":\"connect failed: Connection refused\",\"rtt_ms\":12.3,"
	    "\"since\":\"2024-05-01T12:00:00Z\",\"down_for_seconds\":12.3,"
	    "\"timestamp\":\"2024-05-01T12:00:12Z\"}");
	e = target_sample(ALERT_EVENT_TARGET_UP);
	e.rtt_measured = false;
	assert_body(
	    ALERT_FORMAT_JSON, &e,
	    "{\"event\":\"target_up\",\"tunnel\":\"primary\",\"forward\":\"127.0.0.1:5433\","
	    "\"target\":\"pg_main:5432\",\"node\":\"web1\",\"host\":\"db.example.com\","
	    "\"port\":22,\"reason\":\"connect failed: Connection refused\",\"rtt_ms\":null,"
	    "\"since\":\"2024-05-01T12:00:00Z\",\"down_for_seconds\":12.3,"
	    "\"timestamp\":\"2024-05-01T12:00:12Z\"}");
	e = degraded_sample(ALERT_EVENT_DEGRADED);
	assert_body(
	    ALERT_FORMAT_JSON, &e,
	    "{\"event\":\"degraded\",\"tunnel\":\"primary\",\"forward\":null,\"target\":null,"
	    "\"node\":\"web1\",\"host\":\"db.example.com\",\"port\":22,"
	    "\"reason\":\"rtt 1234 ms above degraded_rtt 1000 ms\",\"rtt_ms\":1500.0,"
	    "\"since\":\"2024-05-01T12:00:00Z\",\"down_for_seconds\":12.3,"
	    "\"timestamp\":\"2024-05-01T12:00:12Z\"}");
	e = degraded_sample(ALERT_EVENT_RECOVERED);
	assert_body(
	    ALERT_FORMAT_JSON, &e,
	    "{\"event\":\"recovered\",\"tunnel\":\"primary\",\"forward\":null,\"target\":null,"
	    "\"node\":\"web1\",\"host\":\"db.example.com\",\"port\":22,"
	    "\"reason\":\"rtt 1234 ms above degraded_rtt 1000 ms\",\"rtt_ms\":250.0,"
	    "\"since\":\"2024-05-01T12:00:00Z\",\"down_for_seconds\":12.3,"
	    "\"timestamp\":\"2024-05-01T12:00:12Z\"}");
}

static void test_slack_health_events(void **state)
{
	struct alert_event e = target_sample(ALERT_EVENT_TARGET_DOWN);

	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":red_circle: moletun on web1: tunnel primary: target pg_main:5432 "
		    "of forward 127.0.0.1:5433 is UNREACHABLE: connect failed: Connection refused "
		    "(for 12.3s, since 2024-05-01T12:00:00Z)\"}");
	e = target_sample(ALERT_EVENT_TARGET_UP);
	e.down_for_seconds = 192.5;
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":large_green_circle: moletun on web1: tunnel primary: target "
		    "pg_main:5432 of forward 127.0.0.1:5433 is reachable again after 3m12s (was: "
		    "connect failed: Connection refused)\"}");
	e = degraded_sample(ALERT_EVENT_DEGRADED);
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":large_yellow_circle: moletun on web1: tunnel primary "
		    "(db.example.com:22) is DEGRADED: rtt 1234 ms above degraded_rtt 1000 ms (for "
		    "12.3s, since 2024-05-01T12:00:00Z)\"}");
	e = degraded_sample(ALERT_EVENT_RECOVERED);
	e.down_for_seconds = 2 * 3600 + 5 * 60;
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":large_green_circle: moletun on web1: tunnel primary "
		    "(db.example.com:22) recovered after 2h05m degraded (was: rtt 1234 ms above "
		    "degraded_rtt 1000 ms)\"}");
}

static void test_alertmanager_health_events(void **state)
{
	struct alert_event e = target_sample(ALERT_EVENT_TARGET_DOWN);

	/* firing: endsAt four re-send intervals ahead; forward and target are labels */
	assert_body(
	    ALERT_FORMAT_ALERTMANAGER, &e,
	    "[{\"labels\":{\"alertname\":\"MoletunTargetDown\",\"tunnel\":\"primary\","
	    "\"forward\":\"127.0.0.1:5433\",\"target\":\"pg_main:5432\",\"instance\":\"web1\"},"
	    "\"annotations\":{\"summary\":\"Target pg_main:5432 of SSH tunnel primary on web1 "
	    "is unreachable\",\"description\":\"forward 127.0.0.1:5433 -> pg_main:5432: "
	    "connect failed: Connection refused (unreachable for 12.3s)\"},"
	    "\"startsAt\":\"2024-05-01T12:00:00Z\",\"endsAt\":\"2024-05-01T12:04:12Z\"}]");
	/* resolved: the same labels, endsAt the moment it answered again */
	e = target_sample(ALERT_EVENT_TARGET_UP);
	assert_body(
	    ALERT_FORMAT_ALERTMANAGER, &e,
	    "[{\"labels\":{\"alertname\":\"MoletunTargetDown\",\"tunnel\":\"primary\","
	    "\"forward\":\"127.0.0.1:5433\",\"target\":\"pg_main:5432\",\"instance\":\"web1\"},"
	    "\"annotations\":{\"summary\":\"Target pg_main:5432 of SSH tunnel primary on web1 "
	    "is unreachable\",\"description\":\"forward 127.0.0.1:5433 -> pg_main:5432: "
	    "connect failed: Connection refused (was unreachable for 12.3s)\"},"
	    "\"startsAt\":\"2024-05-01T12:00:00Z\",\"endsAt\":\"2024-05-01T12:00:12Z\"}]");
	e = degraded_sample(ALERT_EVENT_DEGRADED);
	assert_body(
	    ALERT_FORMAT_ALERTMANAGER, &e,
	    "[{\"labels\":{\"alertname\":\"MoletunTunnelDegraded\",\"tunnel\":\"primary\","
	    "\"instance\":\"web1\"},\"annotations\":{\"summary\":\"SSH tunnel primary on web1 "
	    "is degraded\",\"description\":\"db.example.com:22: rtt 1234 ms above "
	    "degraded_rtt 1000 ms (degraded for 12.3s)\"},"
	    "\"startsAt\":\"2024-05-01T12:00:00Z\",\"endsAt\":\"2024-05-01T12:04:12Z\"}]");
	e = degraded_sample(ALERT_EVENT_RECOVERED);
	assert_body(
	    ALERT_FORMAT_ALERTMANAGER, &e,
	    "[{\"labels\":{\"alertname\":\"MoletunTunnelDegraded\",\"tunnel\":\"primary\","
	    "\"instance\":\"web1\"},\"annotations\":{\"summary\":\"SSH tunnel primary on web1 "
	    "is degraded\",\"description\":\"db.example.com:22: rtt 1234 ms above "
	    "degraded_rtt 1000 ms (was degraded for 12.3s)\"},"
	    "\"startsAt\":\"2024-05-01T12:00:00Z\",\"endsAt\":\"2024-05-01T12:00:12Z\"}]");
}

static const char *env_get(char **env, const char *name)
{
	size_t n = strlen(name);

	for (; *env; env++)
		if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
			return *env + n + 1;
	return NULL;
}

static void test_env(void **state)
{
	struct alert_event e = sample(ALERT_EVENT_DOWN);
	char *base[] = {"PATH=/usr/bin:/bin",  "NOTIFY_SOCKET=/run/systemd/notify",
			"MOLETUN_EVENT=stale", "WATCHDOG_USEC=1000",
			"HOME=/root",	       NULL};
	char **env = NULL, *json;
	size_t n = 0;

	assert_int_equal(alert_format_env(&e, "ops", base, &env), 0);
	for (char **p = env; *p; p++)
		n++;
	assert_int_equal(n, 2 + 11);
	assert_string_equal(env_get(env, "PATH"), "/usr/bin:/bin");
	assert_string_equal(env_get(env, "HOME"), "/root");
	assert_null(env_get(env, "NOTIFY_SOCKET"));
	assert_null(env_get(env, "WATCHDOG_USEC"));
	assert_string_equal(env_get(env, "MOLETUN_EVENT"), "down");
	assert_string_equal(env_get(env, "MOLETUN_TUNNEL"), "primary");
	assert_string_equal(env_get(env, "MOLETUN_REASON"), "connection refused");
	assert_string_equal(env_get(env, "MOLETUN_ALERT"), "ops");
	assert_string_equal(env_get(env, "MOLETUN_NODE"), "web1");
	assert_string_equal(env_get(env, "MOLETUN_HOST"), "db.example.com");
	assert_string_equal(env_get(env, "MOLETUN_PORT"), "22");
	assert_string_equal(env_get(env, "MOLETUN_SINCE"), "2024-05-01T12:00:00Z");
	assert_string_equal(env_get(env, "MOLETUN_TIMESTAMP"), "2024-05-01T12:00:12Z");
	assert_string_equal(env_get(env, "MOLETUN_DOWN_FOR_SECONDS"), "12.3");
	json = body(ALERT_FORMAT_JSON, &e);
	assert_string_equal(env_get(env, "MOLETUN_JSON"), json);
	free(json);
	/* only the events whose json has them */
	assert_null(env_get(env, "MOLETUN_FORWARD"));
	assert_null(env_get(env, "MOLETUN_TARGET"));
	assert_null(env_get(env, "MOLETUN_RTT_MS"));
	alert_env_free(env);
	alert_env_free(NULL);
}

static void test_env_health_events(void **state)
{
	struct alert_event e = target_sample(ALERT_EVENT_TARGET_DOWN);
	char *base[] = {"PATH=/bin", "MOLETUN_FORWARD=stale", NULL};
	char **env = NULL, *json;
	size_t n = 0;

	assert_int_equal(alert_format_env(&e, "ops", base, &env), 0);
	for (char **p = env; *p; p++)
		n++;
	assert_int_equal(n, 1 + 14);
	assert_string_equal(env_get(env, "MOLETUN_EVENT"), "target_down");
	assert_string_equal(env_get(env, "MOLETUN_FORWARD"), "127.0.0.1:5433");
	assert_string_equal(env_get(env, "MOLETUN_TARGET"), "pg_main:5432");
	assert_string_equal(env_get(env, "MOLETUN_RTT_MS"), "12.3");
	assert_string_equal(env_get(env, "MOLETUN_REASON"), "connect failed: Connection refused");
	json = body(ALERT_FORMAT_JSON, &e);
	assert_string_equal(env_get(env, "MOLETUN_JSON"), json);
	free(json);
	alert_env_free(env);

	e = degraded_sample(ALERT_EVENT_RECOVERED);
	e.rtt_measured = false;
	assert_int_equal(alert_format_env(&e, "ops", base, &env), 0);
	assert_string_equal(env_get(env, "MOLETUN_EVENT"), "recovered");
	assert_string_equal(env_get(env, "MOLETUN_FORWARD"), "");
	assert_string_equal(env_get(env, "MOLETUN_TARGET"), "");
	assert_string_equal(env_get(env, "MOLETUN_RTT_MS"), "");
	alert_env_free(env);
}

static struct alert_event audit_sample(void)
{
	struct alert_event e = sample(ALERT_EVENT_AUDIT_FAILED);

	snprintf(e.reason, sizeof(e.reason), "failed: session, tcpip_forward 127.0.0.1:0");
	e.since = e.timestamp;
	e.down_for_seconds = 0;
	return e;
}

/* audit_failed in every format: the failed checks as the reason; Alertmanager keeps it for
 * ALERTMANAGER_AUDIT_SEC since it is sent once; exec gets the json and the common
 * variables. */
static void test_audit_failed(void **state)
{
	struct alert_event e = audit_sample();
	char *base[] = {"PATH=/bin", NULL};
	char **env = NULL, *json;
	size_t n = 0;

	assert_body(ALERT_FORMAT_JSON, &e,
		    "{\"event\":\"audit_failed\",\"tunnel\":\"primary\",\"node\":\"web1\","
		    "\"host\":\"db.example.com\",\"port\":22,"
		    "\"reason\":\"failed: session, tcpip_forward 127.0.0.1:0\","
		    "\"since\":\"2024-05-01T12:00:12Z\",\"down_for_seconds\":0.0,"
		    "\"timestamp\":\"2024-05-01T12:00:12Z\"}");
	assert_body(ALERT_FORMAT_SLACK, &e,
		    "{\"text\":\":red_circle: moletun on web1: tunnel primary (db.example.com:22): "
		    "the sidecar is NOT HARDENED: its key can do more than the tunnel's forwards; "
		    "failed: session, tcpip_forward 127.0.0.1:0 (audited 2024-05-01T12:00:12Z; "
		    "moletun audit primary says what fixes each)\"}");
	assert_body(ALERT_FORMAT_ALERTMANAGER, &e,
		    "[{\"labels\":{\"alertname\":\"MoletunSidecarNotHardened\","
		    "\"tunnel\":\"primary\",\"instance\":\"web1\"},\"annotations\":{"
		    "\"summary\":\"The sidecar of SSH tunnel primary on web1 is not hardened\","
		    "\"description\":\"db.example.com:22: the tunnel's key can do more than its "
		    "forwards; failed: session, tcpip_forward 127.0.0.1:0 (moletun audit primary "
		    "says what fixes each)\"},\"startsAt\":\"2024-05-01T12:00:12Z\","
		    "\"endsAt\":\"2024-05-02T12:00:12Z\"}]");
	assert_int_equal(alert_format_env(&e, "ops", base, &env), 0);
	for (char **p = env; *p; p++)
		n++;
	assert_int_equal(n, 1 + 11);
	assert_string_equal(env_get(env, "MOLETUN_EVENT"), "audit_failed");
	assert_string_equal(env_get(env, "MOLETUN_REASON"),
			    "failed: session, tcpip_forward 127.0.0.1:0");
	json = body(ALERT_FORMAT_JSON, &e);
	assert_string_equal(env_get(env, "MOLETUN_JSON"), json);
	free(json);
	assert_null(env_get(env, "MOLETUN_FORWARD"));
	alert_env_free(env);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_event_names),
	    cmocka_unit_test(test_rfc3339),
	    cmocka_unit_test(test_json_down_and_up),
	    cmocka_unit_test(test_json_test_event),
	    cmocka_unit_test(test_json_escaping),
	    cmocka_unit_test(test_slack),
	    cmocka_unit_test(test_alertmanager),
	    cmocka_unit_test(test_metrics_stale),
	    cmocka_unit_test(test_rtt_reason),
	    cmocka_unit_test(test_json_health_events),
	    cmocka_unit_test(test_slack_health_events),
	    cmocka_unit_test(test_alertmanager_health_events),
	    cmocka_unit_test(test_env),
	    cmocka_unit_test(test_env_health_events),
	    cmocka_unit_test(test_audit_failed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
