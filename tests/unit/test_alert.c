#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alert.h"

struct hung_hook {
	int fd;
	char url[64];
};

static void hung_hook_open(struct hung_hook *h)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t len = sizeof(sa);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	h->fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(h->fd >= 0);
	assert_int_equal(bind(h->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(h->fd, 128), 0);
	assert_int_equal(getsockname(h->fd, (struct sockaddr *)&sa, &len), 0);
	snprintf(h->url, sizeof(h->url), "http://127.0.0.1:%u/hook", ntohs(sa.sin_port));
}

struct test_result {
	int calls;
	size_t targets, failed;
	char body[512];
};

static void on_test_done(void *userdata, size_t targets, size_t failed, const char *body)
{
	struct test_result *r = userdata;

	r->calls++;
	r->targets = targets;
	r->failed = failed;
	snprintf(r->body, sizeof(r->body), "%s", body);
}

static void spin(struct ev_loop *loop, int times)
{
	for (int i = 0; i < times; i++) {
		ev_run(loop, EVRUN_NOWAIT);
		usleep(1000);
	}
}

/*
 * 70 events while the first hangs: 64 stay queued (the one in flight included), the 6
 * oldest waiting ones are dropped and counted as failed; destroying the alerter then
 * aborts the transfer and frees the rest without waiting (the sanitizer build checks).
 */
static void test_queue_bounded_and_destroy(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct hung_hook hook;
	char *filter[] = {"t1"};
	struct alert_config alert = {
	    .name = "hook",
	    .format = ALERT_FORMAT_JSON,
	    .down_after_ms = 0,
	    .timeout_ms = 60000,
	    .send_resolved = true,
	    .tunnels = filter,
	    .n_tunnels = 1,
	};
	struct config cfg = {.alerts = &alert, .n_alerts = 1};
	struct status_tunnel tunnels[2] = {
	    {.name = "t1", .host = "db.example.com", .port = 22, .state = TUNNEL_UP},
	    {.name = "t2", .host = "other", .port = 22, .state = TUNNEL_UP},
	};
	struct status_tunnel *tun = &tunnels[0], *other = &tunnels[1];
	struct test_result result = {0};
	struct status st = {0};
	struct alerter *a;

	hung_hook_open(&hook);
	alert.url = hook.url;
	assert_int_equal(alerter_create(loop, &a), 0);
	assert_int_equal(alerter_sync(a, &cfg, tunnels, 2), 0);
	for (int i = 0; i < 35; i++) {
		tun->state = TUNNEL_BACKOFF;
		snprintf(tun->last_error, sizeof(tun->last_error), "outage %d", i);
		alerter_tunnel_update(a, tun);
		tun->state = TUNNEL_UP;
		alerter_tunnel_update(a, tun);
		/* filtered out: no events */
		other->state = i % 2 ? TUNNEL_UP : TUNNEL_BACKOFF;
		alerter_tunnel_update(a, other);
		spin(loop, 1);
	}
	assert_int_equal(alerter_snapshot(a, &st), 0);
	assert_int_equal(st.n_alerts, 1);
	assert_string_equal(st.alerts[0].name, "hook");
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_DOWN], 0);
	assert_int_equal(st.alerts[0].failed, 70 - ALERT_QUEUE_MAX);
	status_free(&st);

	/* a test event waits outside the queue; shutting down reports it as failed */
	assert_int_equal(alerter_test(a, "nosuch", on_test_done, &result), -ENOENT);
	assert_int_equal(alerter_test(a, NULL, on_test_done, &result), 0);
	assert_int_equal(result.calls, 0); /* never from within alerter_test() */
	spin(loop, 20);
	assert_int_equal(result.calls, 0);
	alerter_destroy(a);
	assert_int_equal(result.calls, 1);
	assert_int_equal(result.targets, 1);
	assert_int_equal(result.failed, 1);
	assert_string_equal(result.body, "hook: shutting down\n");
	alerter_destroy(NULL);
	close(hook.fd);
	ev_loop_destroy(loop);
}

/*
 * Answers the next request to `h` with 200 while the loop runs; returns its body (to be
 * freed). Fails the test if no whole request arrives within about two seconds.
 */
static char *hook_serve_one(struct hung_hook *h, struct ev_loop *loop)
{
	char buf[8192];
	size_t len = 0;
	int fd = -1;
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

	fcntl(h->fd, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 2000; i++) {
		char *end;
		ssize_t r;

		spin(loop, 1);
		if (fd < 0) {
			fd = accept(h->fd, NULL, NULL);
			if (fd >= 0)
				fcntl(fd, F_SETFL, O_NONBLOCK);
			continue;
		}
		r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r > 0)
			len += (size_t)r;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end) {
			const char *cl = strcasestr(buf, "Content-Length:");
			size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;

			if (len >= (size_t)(end + 4 - buf) + want) {
				char *body = strndup(end + 4, want);

				assert_int_equal(write(fd, ok, strlen(ok)), (ssize_t)strlen(ok));
				close(fd);
				/* let curl read the answer and the alerter count it */
				spin(loop, 20);
				return body;
			}
		}
	}
	fail_msg("no request within 2s");
	return NULL;
}

static void assert_next_event(struct hung_hook *h, struct ev_loop *loop, const char *prefix,
			      const char *reason)
{
	char *body = hook_serve_one(h, loop);

	if (strncmp(body, prefix, strlen(prefix)) != 0)
		fail_msg("body %s does not start with %s", body, prefix);
	if (reason && !strstr(body, reason))
		fail_msg("body %s has no %s", body, reason);
	free(body);
}

/*
 * Health events from snapshots through the queue to a webhook: target_down, then
 * target_up and degraded, then down, which ends degraded without a recovered event.
 */
static void test_health_events_delivered(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct hung_hook hook;
	struct alert_config alert = {
	    .name = "hook",
	    .format = ALERT_FORMAT_JSON,
	    .down_after_ms = 0,
	    .timeout_ms = 5000,
	    .send_resolved = true,
	};
	struct tunnel_config tc = {.name = "t1", .degraded_rtt_ms = 1000};
	struct config cfg = {.alerts = &alert, .n_alerts = 1, .tunnels = &tc, .n_tunnels = 1};
	struct status_forward fwd = {
	    .kind = FORWARD_LOCAL, .listen = "127.0.0.1:5433", .target = "pg_main:5432"};
	struct status_tunnel tun = {.name = "t1",
				    .host = "db.example.com",
				    .port = 22,
				    .state = TUNNEL_UP,
				    .forwards = &fwd,
				    .n_forwards = 1};
	struct status st = {0};
	struct alerter *a;

	hung_hook_open(&hook);
	alert.url = hook.url;
	assert_int_equal(alerter_create(loop, &a), 0);
	assert_int_equal(alerter_sync(a, &cfg, &tun, 1), 0);

	fwd.target_state = TARGET_UNREACHABLE;
	snprintf(fwd.target_error, sizeof(fwd.target_error), "connect failed: refused");
	tun.health = HEALTH_TARGET_DOWN;
	tun.rtt_measured = true;
	tun.rtt = 1.5;
	alerter_tunnel_update(a, &tun);
	assert_next_event(
	    &hook, loop,
	    "{\"event\":\"target_down\",\"tunnel\":\"t1\",\"forward\":\"127.0.0.1:5433\","
	    "\"target\":\"pg_main:5432\",\"node\":",
	    "\"reason\":\"connect failed: refused\",\"rtt_ms\":1500.0,");

	fwd.target_state = TARGET_REACHABLE;
	fwd.target_error[0] = '\0';
	tun.health = HEALTH_DEGRADED;
	alerter_tunnel_update(a, &tun);
	assert_next_event(&hook, loop, "{\"event\":\"target_up\",\"tunnel\":\"t1\",",
			  "\"reason\":\"connect failed: refused\"");
	assert_next_event(
	    &hook, loop,
	    "{\"event\":\"degraded\",\"tunnel\":\"t1\",\"forward\":null,\"target\":null,",
	    "\"reason\":\"rtt 1500 ms above degraded_rtt 1000 ms\"");

	tun.state = TUNNEL_BACKOFF;
	tun.health = HEALTH_DOWN;
	snprintf(tun.last_error, sizeof(tun.last_error), "connection reset");
	alerter_tunnel_update(a, &tun);
	assert_next_event(&hook, loop, "{\"event\":\"down\",\"tunnel\":\"t1\",\"node\":",
			  "\"reason\":\"connection reset\"");
	tun.state = TUNNEL_UP;
	tun.health = HEALTH_OK;
	alerter_tunnel_update(a, &tun);
	assert_next_event(&hook, loop, "{\"event\":\"up\",\"tunnel\":\"t1\",", NULL);
	/* and nothing else: no recovered for the degraded alert the down event ended */
	spin(loop, 50);
	assert_int_equal(accept(hook.fd, NULL, NULL), -1);

	assert_int_equal(alerter_snapshot(a, &st), 0);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_TARGET_DOWN], 1);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_TARGET_UP], 1);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_DEGRADED], 1);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_RECOVERED], 0);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_DOWN], 1);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_UP], 1);
	assert_int_equal(st.alerts[0].failed, 0);
	status_free(&st);
	alerter_destroy(a);
	close(hook.fd);
	ev_loop_destroy(loop);
}

/*
 * The daemon's own event (metrics_stale) goes to a target whatever tunnels it watches;
 * the same state twice sends nothing; metrics_fresh ends it, only with send_resolved.
 */
static void test_daemon_event_to_every_target(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct hung_hook hook, quiet;
	char *only[] = {"other"};
	struct alert_config alerts[2] = {
	    {.name = "hook",
	     .format = ALERT_FORMAT_JSON,
	     .timeout_ms = 5000,
	     .send_resolved = true,
	     .tunnels = only,
	     .n_tunnels = 1},
	    {.name = "quiet", .format = ALERT_FORMAT_JSON, .timeout_ms = 5000},
	};
	struct config cfg = {.alerts = alerts, .n_alerts = 2};
	struct status st = {0};
	struct alerter *a;

	hung_hook_open(&hook);
	hung_hook_open(&quiet);
	alerts[0].url = hook.url;
	alerts[1].url = quiet.url;
	assert_int_equal(alerter_create(loop, &a), 0);
	assert_int_equal(alerter_sync(a, &cfg, NULL, 0), 0);

	alerter_daemon_event(a, ALERT_EVENT_METRICS_STALE,
			     "metrics_textfile /x/m.prom not written: Permission denied", 0.6);
	alerter_daemon_event(a, ALERT_EVENT_METRICS_STALE, "again", 0.8);
	assert_next_event(&hook, loop, "{\"event\":\"metrics_stale\",\"tunnel\":\"\",\"node\":",
			  "\"reason\":\"metrics_textfile /x/m.prom not written: Permission "
			  "denied\",\"since\":");
	assert_next_event(&quiet, loop, "{\"event\":\"metrics_stale\",", NULL);
	alerter_daemon_event(a, ALERT_EVENT_METRICS_FRESH, "written again", 1.0);
	alerter_daemon_event(a, ALERT_EVENT_METRICS_FRESH, "written again", 1.0);
	assert_next_event(&hook, loop, "{\"event\":\"metrics_fresh\",", "written again");
	/* nothing else, to either */
	spin(loop, 50);
	assert_int_equal(accept(hook.fd, NULL, NULL), -1);
	assert_int_equal(accept(quiet.fd, NULL, NULL), -1);

	assert_int_equal(alerter_snapshot(a, &st), 0);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_METRICS_STALE], 1);
	assert_int_equal(st.alerts[0].sent[ALERT_EVENT_METRICS_FRESH], 1);
	assert_int_equal(st.alerts[1].sent[ALERT_EVENT_METRICS_STALE], 1);
	assert_int_equal(st.alerts[1].sent[ALERT_EVENT_METRICS_FRESH], 0);
	status_free(&st);
	alerter_daemon_event(NULL, ALERT_EVENT_METRICS_STALE, "ignored", 0);
	alerter_destroy(a);
	close(hook.fd);
	close(quiet.fd);
	ev_loop_destroy(loop);
}

/* Targets are kept by name across syncs (counters too); removed ones go. */
static void test_sync_keeps_targets(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct alert_config alerts[2] = {
	    {.name = "a", .url = "http://127.0.0.1:9/", .timeout_ms = 1000},
	    {.name = "b", .url = "http://127.0.0.1:9/", .timeout_ms = 1000},
	};
	struct config one = {.alerts = &alerts[1], .n_alerts = 1};
	struct config two = {.alerts = alerts, .n_alerts = 2};
	struct config none = {0};
	struct status st = {0};
	struct alerter *a;

	assert_int_equal(alerter_create(loop, &a), 0);
	assert_int_equal(alerter_sync(a, &one, NULL, 0), 0);
	assert_int_equal(alerter_sync(a, &two, NULL, 0), 0);
	assert_int_equal(alerter_snapshot(a, &st), 0);
	assert_int_equal(st.n_alerts, 2);
	/* in configuration order */
	assert_string_equal(st.alerts[0].name, "a");
	assert_string_equal(st.alerts[1].name, "b");
	status_free(&st);
	assert_int_equal(alerter_sync(a, &none, NULL, 0), 0);
	assert_int_equal(alerter_snapshot(a, &st), 0);
	assert_int_equal(st.n_alerts, 0);
	status_free(&st);
	assert_int_equal(alerter_test(a, NULL, on_test_done, NULL), -ENOENT);
	alerter_destroy(a);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_queue_bounded_and_destroy),
	    cmocka_unit_test(test_health_events_delivered),
	    cmocka_unit_test(test_sync_keeps_targets),
	    cmocka_unit_test(test_daemon_event_to_every_target),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
