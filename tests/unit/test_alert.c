#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alert.h"
#include "tunnel.h"

static const struct alert_policy plain = {.down_after = 5, .resend = 0, .send_resolved = true};

/* A tunnel that was up goes down at 100 and stays down: one down event at 105. */
static void test_down_after_debounce(void **state)
{
	struct alert_debounce d;

	alert_debounce_init(&d, &plain, true, 0);
	assert_false(d.down);
	assert_true(d.due == 0);
	assert_int_equal(alert_debounce_update(&d, &plain, false, false, 100), ALERT_ACTION_NONE);
	assert_true(d.due == 105);
	/* connecting <-> backoff cycles while down change nothing */
	assert_int_equal(alert_debounce_update(&d, &plain, false, false, 101), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_update(&d, &plain, false, false, 103), ALERT_ACTION_NONE);
	assert_true(d.due == 105);
	assert_true(d.down_since == 100);
	assert_int_equal(alert_debounce_expire(&d, &plain, 104.9), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_expire(&d, &plain, 105), ALERT_ACTION_DOWN);
	assert_true(d.due == 0);
	assert_int_equal(alert_debounce_expire(&d, &plain, 200), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_update(&d, &plain, false, false, 201), ALERT_ACTION_NONE);
	/* back: one up event, the outage measured from 100 */
	assert_int_equal(alert_debounce_update(&d, &plain, true, false, 250), ALERT_ACTION_UP);
	assert_true(d.down_since == 100);
	assert_int_equal(alert_debounce_update(&d, &plain, true, false, 251), ALERT_ACTION_NONE);
	assert_false(d.down);
}

/* Down and back within down_after, again and again: nothing at all. */
static void test_flap_sends_nothing(void **state)
{
	struct alert_debounce d;
	double t = 0;

	alert_debounce_init(&d, &plain, true, t);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(alert_debounce_update(&d, &plain, false, false, t + 1),
				 ALERT_ACTION_NONE);
		assert_int_equal(alert_debounce_expire(&d, &plain, t + 5.9), ALERT_ACTION_NONE);
		assert_int_equal(alert_debounce_update(&d, &plain, true, false, t + 5.9),
				 ALERT_ACTION_NONE);
		/* a stale timer after recovery does nothing */
		assert_int_equal(alert_debounce_expire(&d, &plain, t + 7), ALERT_ACTION_NONE);
		t += 10;
	}
}

/* Never up since start: down_after counts from the start. */
static void test_never_up_since_start(void **state)
{
	struct alert_debounce d;

	alert_debounce_init(&d, &plain, false, 10);
	assert_true(d.down);
	assert_true(d.due == 15);
	assert_int_equal(alert_debounce_update(&d, &plain, false, false, 12), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_expire(&d, &plain, 15), ALERT_ACTION_DOWN);
	/* coming up within down_after from start sends nothing */
	alert_debounce_init(&d, &plain, false, 10);
	assert_int_equal(alert_debounce_update(&d, &plain, true, false, 11), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_expire(&d, &plain, 15), ALERT_ACTION_NONE);
}

/* Host key and authentication failures need a human: at once, and only once. */
static void test_needs_human_fires_at_once(void **state)
{
	struct alert_debounce d;

	alert_debounce_init(&d, &plain, true, 0);
	assert_int_equal(alert_debounce_update(&d, &plain, false, true, 50), ALERT_ACTION_DOWN);
	assert_int_equal(alert_debounce_update(&d, &plain, false, true, 52), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_expire(&d, &plain, 60), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_update(&d, &plain, true, false, 70), ALERT_ACTION_UP);
	/* a network failure first, then auth: fires at the auth failure */
	assert_int_equal(alert_debounce_update(&d, &plain, false, false, 100), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_update(&d, &plain, false, true, 101), ALERT_ACTION_DOWN);
	/* never up since start, wrong host key: fires at the first failure */
	alert_debounce_init(&d, &plain, false, 0);
	assert_int_equal(alert_debounce_update(&d, &plain, false, true, 0.2), ALERT_ACTION_DOWN);
}

static void test_send_resolved_no(void **state)
{
	const struct alert_policy p = {.down_after = 1, .send_resolved = false};
	struct alert_debounce d;

	alert_debounce_init(&d, &p, true, 0);
	alert_debounce_update(&d, &p, false, false, 1);
	assert_int_equal(alert_debounce_expire(&d, &p, 2), ALERT_ACTION_DOWN);
	assert_int_equal(alert_debounce_update(&d, &p, true, false, 3), ALERT_ACTION_NONE);
	/* the next outage is a new one */
	assert_int_equal(alert_debounce_update(&d, &p, false, false, 4), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_expire(&d, &p, 5), ALERT_ACTION_DOWN);
}

static void test_down_after_zero(void **state)
{
	const struct alert_policy p = {.down_after = 0, .send_resolved = true};
	struct alert_debounce d;

	alert_debounce_init(&d, &p, true, 0);
	assert_int_equal(alert_debounce_update(&d, &p, false, false, 1), ALERT_ACTION_DOWN);
	assert_int_equal(alert_debounce_update(&d, &p, true, false, 1.1), ALERT_ACTION_UP);
}

/* Alertmanager: re-sent every `resend` while down, never after recovery. */
static void test_resend_while_firing(void **state)
{
	const struct alert_policy p = {.down_after = 5, .resend = 60, .send_resolved = true};
	struct alert_debounce d;

	alert_debounce_init(&d, &p, true, 0);
	alert_debounce_update(&d, &p, false, false, 0);
	assert_int_equal(alert_debounce_expire(&d, &p, 5), ALERT_ACTION_DOWN);
	assert_true(d.due == 65);
	assert_int_equal(alert_debounce_expire(&d, &p, 64), ALERT_ACTION_NONE);
	assert_int_equal(alert_debounce_expire(&d, &p, 65), ALERT_ACTION_RESEND);
	assert_true(d.due == 125);
	assert_int_equal(alert_debounce_expire(&d, &p, 125.5), ALERT_ACTION_RESEND);
	assert_int_equal(alert_debounce_update(&d, &p, true, false, 130), ALERT_ACTION_UP);
	assert_true(d.due == 0);
	assert_int_equal(alert_debounce_expire(&d, &p, 190), ALERT_ACTION_NONE);
}

/* A reload that changes down_after re-plans an outage in progress from its start. */
static void test_set_policy(void **state)
{
	const struct alert_policy longer = {.down_after = 30, .send_resolved = true};
	const struct alert_policy am = {.down_after = 30, .resend = 60, .send_resolved = true};
	struct alert_debounce d;

	alert_debounce_init(&d, &plain, true, 0);
	alert_debounce_update(&d, &plain, false, false, 10);
	alert_debounce_set_policy(&d, &longer, 12);
	assert_true(d.due == 40);
	assert_int_equal(alert_debounce_expire(&d, &longer, 40), ALERT_ACTION_DOWN);
	alert_debounce_set_policy(&d, &am, 41);
	assert_true(d.due == 101);
	alert_debounce_update(&d, &am, true, false, 50);
	alert_debounce_set_policy(&d, &plain, 51);
	assert_true(d.due == 0);
}

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
	struct tunnel_config tc = {.name = "t1", .host = "db.example.com", .port = 22};
	struct tunnel_config other_tc = {.name = "t2", .host = "other", .port = 22};
	struct config cfg = {.alerts = &alert, .n_alerts = 1};
	struct tunnel tun = {.cfg = &tc, .state = TUNNEL_UP};
	struct tunnel other = {.cfg = &other_tc, .state = TUNNEL_UP};
	struct tunnel *tunnels[] = {&tun, &other};
	struct test_result result = {0};
	struct status st = {0};
	struct alerter *a;

	hung_hook_open(&hook);
	alert.url = hook.url;
	assert_int_equal(alerter_create(loop, &a), 0);
	assert_int_equal(alerter_sync(a, &cfg, tunnels, 2), 0);
	for (int i = 0; i < 35; i++) {
		tun.state = TUNNEL_BACKOFF;
		snprintf(tun.last_error, sizeof(tun.last_error), "outage %d", i);
		alerter_tunnel_state(a, &tun);
		tun.state = TUNNEL_UP;
		alerter_tunnel_state(a, &tun);
		/* filtered out: no events */
		other.state = i % 2 ? TUNNEL_UP : TUNNEL_BACKOFF;
		alerter_tunnel_state(a, &other);
		spin(loop, 1);
	}
	assert_int_equal(alerter_snapshot(a, &st), 0);
	assert_int_equal(st.n_alerts, 1);
	assert_string_equal(st.alerts[0].name, "hook");
	assert_int_equal(st.alerts[0].sent_down, 0);
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
	    cmocka_unit_test(test_down_after_debounce),
	    cmocka_unit_test(test_flap_sends_nothing),
	    cmocka_unit_test(test_never_up_since_start),
	    cmocka_unit_test(test_needs_human_fires_at_once),
	    cmocka_unit_test(test_send_resolved_no),
	    cmocka_unit_test(test_down_after_zero),
	    cmocka_unit_test(test_resend_while_firing),
	    cmocka_unit_test(test_set_policy),
	    cmocka_unit_test(test_queue_bounded_and_destroy),
	    cmocka_unit_test(test_sync_keeps_targets),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
