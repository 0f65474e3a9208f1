#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "alert_debounce.h"
#include "alert_watch.h"

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

/* A snapshot with room for a few forwards, as tunnel_snapshot() would fill it. */
struct snap {
	struct status_tunnel t;
	struct status_forward f[3];
};

static void snap_init(struct snap *s, size_t n_forwards)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->t.name, sizeof(s->t.name), "t1");
	s->t.state = TUNNEL_UP;
	s->t.health = HEALTH_OK;
	s->t.forwards = s->f;
	s->t.n_forwards = n_forwards;
	for (size_t i = 0; i < n_forwards; i++) {
		snprintf(s->f[i].listen, sizeof(s->f[i].listen), "127.0.0.1:%zu", 5430 + i);
		snprintf(s->f[i].target, sizeof(s->f[i].target), "db%zu:5432", i);
	}
}

/* health as health_decide() would have it (degraded left as set) */
static void snap_health(struct snap *s)
{
	if (s->t.state != TUNNEL_UP) {
		s->t.health = HEALTH_DOWN;
		return;
	}
	for (size_t i = 0; i < s->t.n_forwards; i++) {
		if (s->f[i].target_state == TARGET_UNREACHABLE) {
			s->t.health = HEALTH_TARGET_DOWN;
			return;
		}
	}
	if (s->t.health != HEALTH_DEGRADED)
		s->t.health = HEALTH_OK;
}

static void set_target(struct snap *s, size_t i, enum target_state state, const char *error)
{
	s->f[i].target_state = state;
	snprintf(s->f[i].target_error, sizeof(s->f[i].target_error), "%s", error);
	snap_health(s);
}

static void set_tunnel(struct snap *s, enum tunnel_state state, const char *error)
{
	s->t.state = state;
	snprintf(s->t.last_error, sizeof(s->t.last_error), "%s", error);
	snap_health(s);
}

static void set_degraded(struct snap *s, bool degraded, double rtt)
{
	s->t.rtt_measured = true;
	s->t.rtt = rtt;
	s->t.health = degraded ? HEALTH_DEGRADED : HEALTH_OK;
	snap_health(s);
}

/* The decisions of one call, as "down up target_down:1 degraded resend:target_down:0". */
static void describe(const struct alert_decision *d, size_t n, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && len < size; i++) {
		bool target =
		    d[i].kind == ALERT_EVENT_TARGET_DOWN || d[i].kind == ALERT_EVENT_TARGET_UP;
		char fwd[16] = "";

		if (target)
			snprintf(fwd, sizeof(fwd), ":%zu", d[i].forward);
		len +=
		    (size_t)snprintf(buf + len, size - len, "%s%s%s%s", i ? " " : "",
				     d[i].resend ? "resend:" : "", alert_event_str(d[i].kind), fwd);
	}
}

static void assert_update(struct alert_watch_state *w, const struct alert_policy *p,
			  const struct snap *s, double now, const char *want)
{
	struct alert_decision out[ALERT_DECISIONS_MAX(3)];
	char got[256];
	size_t n = 99;

	assert_int_equal(alert_watch_update(w, p, &s->t, now, out, &n), 0);
	assert_true(n <= ALERT_DECISIONS_MAX(s->t.n_forwards));
	describe(out, n, got, sizeof(got));
	assert_string_equal(got, want);
}

static void assert_expire(struct alert_watch_state *w, const struct alert_policy *p, double now,
			  const char *want)
{
	struct alert_decision out[ALERT_DECISIONS_MAX(3)];
	char got[256];
	size_t n = alert_watch_expire(w, p, now, out);

	describe(out, n, got, sizeof(got));
	assert_string_equal(got, want);
}

static void watch_start(struct alert_watch_state *w, const struct alert_policy *p,
			const struct snap *s, double now)
{
	assert_int_equal(alert_watch_init(w, p, &s->t, now), 0);
	assert_update(w, p, s, now, "");
}

/* A target unreachable for down_after: one target_down, and target_up when it answers. */
static void test_watch_target_down_up(void **state)
{
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 2);
	watch_start(&w, &plain, &s, 0);
	assert_true(alert_watch_due(&w) == 0);
	set_target(&s, 1, TARGET_UNREACHABLE, "connect failed: refused");
	assert_update(&w, &plain, &s, 100, "");
	assert_true(alert_watch_due(&w) == 105);
	/* the same evidence again changes nothing, nor does the other forward's success */
	set_target(&s, 0, TARGET_REACHABLE, "");
	assert_update(&w, &plain, &s, 102, "");
	assert_true(alert_watch_due(&w) == 105);
	assert_expire(&w, &plain, 104.9, "");
	assert_expire(&w, &plain, 105, "target_down:1");
	assert_string_equal(w.forwards[1].listen, "127.0.0.1:5431");
	assert_string_equal(w.forwards[1].target, "db1:5432");
	assert_string_equal(w.forwards[1].error, "connect failed: refused");
	assert_true(w.forwards[1].debounce.down_since == 100);
	assert_true(alert_watch_due(&w) == 0);
	/* a new error while down is the latest reason */
	set_target(&s, 1, TARGET_UNREACHABLE, "probe timed out");
	assert_update(&w, &plain, &s, 110, "");
	assert_string_equal(w.forwards[1].error, "probe timed out");
	set_target(&s, 1, TARGET_REACHABLE, "");
	assert_update(&w, &plain, &s, 120, "target_up:1");
	assert_update(&w, &plain, &s, 121, "");
	/* unreachable and back within down_after: nothing */
	set_target(&s, 0, TARGET_UNREACHABLE, "x");
	assert_update(&w, &plain, &s, 130, "");
	set_target(&s, 0, TARGET_REACHABLE, "");
	assert_update(&w, &plain, &s, 134, "");
	assert_expire(&w, &plain, 135, "");
	alert_watch_finish(&w);
}

/* "unknown" is no evidence: it cancels a condition not fired yet, and resolves nothing. */
static void test_watch_unknown_is_no_evidence(void **state)
{
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 1);
	watch_start(&w, &plain, &s, 0);
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 10, "");
	set_target(&s, 0, TARGET_UNKNOWN, "");
	assert_update(&w, &plain, &s, 12, "");
	assert_true(alert_watch_due(&w) == 0);
	assert_expire(&w, &plain, 15, "");
	/* held again: down_after counts from now */
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 20, "");
	assert_expire(&w, &plain, 25, "target_down:0");
	set_target(&s, 0, TARGET_UNKNOWN, "");
	assert_update(&w, &plain, &s, 30, "");
	set_target(&s, 0, TARGET_REACHABLE, "");
	assert_update(&w, &plain, &s, 40, "target_up:0");
	assert_true(w.forwards[0].debounce.down_since == 20);
	alert_watch_finish(&w);
}

/* Degraded for down_after: degraded, then recovered; a target down says nothing of it. */
static void test_watch_degraded(void **state)
{
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 1);
	watch_start(&w, &plain, &s, 0);
	set_degraded(&s, true, 1.5);
	assert_update(&w, &plain, &s, 10, "");
	assert_expire(&w, &plain, 15, "degraded");
	assert_true(w.rtt_peak == 1.5);
	set_degraded(&s, true, 2.5);
	assert_update(&w, &plain, &s, 16, "");
	set_degraded(&s, true, 0.9); /* within the hysteresis */
	assert_update(&w, &plain, &s, 17, "");
	assert_true(w.rtt == 0.9);
	assert_true(w.rtt_peak == 2.5);
	/* target_down wins over degraded: the degraded alert stands */
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 20, "");
	assert_expire(&w, &plain, 25, "target_down:0");
	set_target(&s, 0, TARGET_REACHABLE, "");
	s.t.health = HEALTH_OK;
	assert_update(&w, &plain, &s, 30, "target_up:0 recovered");
	/* a pending degraded is cancelled while the target is down */
	set_degraded(&s, true, 1.5);
	assert_update(&w, &plain, &s, 40, "");
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 42, "");
	assert_expire(&w, &plain, 45, "");
	assert_expire(&w, &plain, 47, "target_down:0");
	alert_watch_finish(&w);
}

static void set_sidecar(struct snap *s, enum sidecar_state state, const char *failed)
{
	memset(&s->t.sidecar, 0, sizeof(s->t.sidecar));
	s->t.sidecar.state = state;
	if (failed) {
		s->t.sidecar.n_failed = 1;
		snprintf(s->t.sidecar.failed[0], sizeof(s->t.sidecar.failed[0]), "%s", failed);
	}
}

/* audit_failed: at once, once per change to not_hardened; unknown changes nothing, a
 * verdict the watch was started with is no change, and a tunnel down does not hold it. */
static void test_watch_audit_failed(void **state)
{
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 1);
	watch_start(&w, &plain, &s, 0);
	set_sidecar(&s, SIDECAR_HARDENED, NULL);
	assert_update(&w, &plain, &s, 1, "");
	set_sidecar(&s, SIDECAR_NOT_HARDENED, "session");
	assert_update(&w, &plain, &s, 2, "audit_failed");
	assert_string_equal(w.sidecar_failed, "session");
	assert_true(w.sidecar_since == 2);
	/* the next audits say the same: nothing more */
	assert_update(&w, &plain, &s, 3, "");
	assert_expire(&w, &plain, 100, "");
	/* an audit that could not finish, then the same verdict: no change */
	set_sidecar(&s, SIDECAR_UNKNOWN, NULL);
	assert_update(&w, &plain, &s, 4, "");
	set_sidecar(&s, SIDECAR_NOT_HARDENED, "tcpip_forward 127.0.0.1:0");
	assert_update(&w, &plain, &s, 5, "");
	assert_string_equal(w.sidecar_failed, "tcpip_forward 127.0.0.1:0");
	/* fixed, then broken again: a second change */
	set_sidecar(&s, SIDECAR_HARDENED, NULL);
	assert_update(&w, &plain, &s, 6, "");
	set_tunnel(&s, TUNNEL_BACKOFF, "refused");
	set_sidecar(&s, SIDECAR_NOT_HARDENED, "pty");
	assert_update(&w, &plain, &s, 7, "audit_failed");
	alert_watch_finish(&w);

	/* a watch started on a verdict already not_hardened (a target added by a reload) */
	snap_init(&s, 1);
	set_sidecar(&s, SIDECAR_NOT_HARDENED, "session");
	watch_start(&w, &plain, &s, 0);
	assert_update(&w, &plain, &s, 1, "");
	alert_watch_finish(&w);
}

/*
 * The tunnel goes down while its target_down and degraded alerts stand: one down event,
 * nothing else; after up, each condition needs down_after again.
 */
static void test_watch_down_supersedes(void **state)
{
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 2);
	watch_start(&w, &plain, &s, 0);
	set_degraded(&s, true, 1.5);
	assert_update(&w, &plain, &s, 10, "");
	assert_expire(&w, &plain, 15, "degraded");
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 20, "");
	assert_expire(&w, &plain, 25, "target_down:0");
	/* down: suspended, no target_up nor recovered */
	set_tunnel(&s, TUNNEL_BACKOFF, "connection reset");
	assert_update(&w, &plain, &s, 30, "");
	assert_true(alert_watch_due(&w) == 35);
	set_tunnel(&s, TUNNEL_CONNECTING, "");
	assert_update(&w, &plain, &s, 31, "");
	assert_expire(&w, &plain, 35, "down");
	assert_string_equal(w.reason, "connection reset");
	assert_false(w.forwards[0].debounce.down);
	assert_false(w.degraded.down);
	/* up with the target still unreachable and the RTT still high: up, then after
	 * down_after target_down and degraded again */
	set_tunnel(&s, TUNNEL_UP, "");
	s.t.health = HEALTH_DEGRADED;
	snap_health(&s);
	assert_update(&w, &plain, &s, 50, "up");
	assert_true(alert_watch_due(&w) == 55);
	assert_expire(&w, &plain, 55, "target_down:0");
	alert_watch_finish(&w);
}

/* A flap shorter than down_after sends no down: the health alerts go on where they were. */
static void test_watch_flap_resumes(void **state)
{
	const struct alert_policy am = {.down_after = 5, .resend = 60, .send_resolved = true};
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 1);
	watch_start(&w, &am, &s, 0);
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &am, &s, 0, "");
	assert_expire(&w, &am, 5, "target_down:0");
	assert_true(alert_watch_due(&w) == 65);
	/* down at 62: no re-send while suspended, the tunnel's down_after is what is due */
	set_tunnel(&s, TUNNEL_BACKOFF, "reset");
	assert_update(&w, &am, &s, 62, "");
	assert_true(alert_watch_due(&w) == 67);
	assert_expire(&w, &am, 65, "");
	/* back at 66, target reachable: only target_up */
	set_tunnel(&s, TUNNEL_UP, "");
	set_target(&s, 0, TARGET_REACHABLE, "");
	assert_update(&w, &am, &s, 66, "target_up:0");
	assert_true(alert_watch_due(&w) == 0);
	/* again, back with the target still unreachable: the alert stands, re-sent as due */
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &am, &s, 100, "");
	assert_expire(&w, &am, 105, "target_down:0");
	set_tunnel(&s, TUNNEL_BACKOFF, "reset");
	assert_update(&w, &am, &s, 164, "");
	assert_expire(&w, &am, 165, "");
	set_tunnel(&s, TUNNEL_UP, "");
	assert_update(&w, &am, &s, 166, "");
	assert_true(alert_watch_due(&w) == 165);
	assert_expire(&w, &am, 166, "resend:target_down:0");
	assert_true(alert_watch_due(&w) == 226);
	/* a pending one whose down_after passed during the flap fires once back */
	set_target(&s, 0, TARGET_REACHABLE, "");
	assert_update(&w, &am, &s, 170, "target_up:0");
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &am, &s, 200, "");
	set_tunnel(&s, TUNNEL_BACKOFF, "reset");
	assert_update(&w, &am, &s, 201, "");
	assert_expire(&w, &am, 205, "");
	set_tunnel(&s, TUNNEL_UP, "");
	assert_update(&w, &am, &s, 205.5, "target_down:0");
	alert_watch_finish(&w);
}

/* Authentication failures fire down at once, even with a target_down pending. */
static void test_watch_auth_failure(void **state)
{
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 1);
	set_tunnel(&s, TUNNEL_BACKOFF, "host key changed");
	s.t.auth_failure = true;
	assert_int_equal(alert_watch_init(&w, &plain, &s.t, 0), 0);
	assert_update(&w, &plain, &s, 0, "down");
	assert_string_equal(w.reason, "host key changed");
	assert_update(&w, &plain, &s, 1, "");
	s.t.auth_failure = false;
	set_tunnel(&s, TUNNEL_UP, "");
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 10, "up");
	set_tunnel(&s, TUNNEL_BACKOFF, "authentication failed");
	s.t.auth_failure = true;
	assert_update(&w, &plain, &s, 12, "down");
	assert_false(w.forwards[0].debounce.down);
	alert_watch_finish(&w);
}

/* send_resolved = no: no target_up, recovered or up. down_after 0: at once, in order. */
static void test_watch_policies(void **state)
{
	const struct alert_policy quiet = {.down_after = 0, .send_resolved = false};
	const struct alert_policy now = {.down_after = 0, .send_resolved = true};
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 2);
	watch_start(&w, &quiet, &s, 0);
	set_target(&s, 1, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &quiet, &s, 1, "target_down:1");
	set_target(&s, 1, TARGET_REACHABLE, "");
	assert_update(&w, &quiet, &s, 2, "");
	set_degraded(&s, true, 3);
	assert_update(&w, &quiet, &s, 3, "degraded");
	set_degraded(&s, false, 0.1);
	assert_update(&w, &quiet, &s, 4, "");
	alert_watch_finish(&w);

	snap_init(&s, 2);
	set_tunnel(&s, TUNNEL_CONNECTING, "");
	assert_int_equal(alert_watch_init(&w, &now, &s.t, 0), 0);
	assert_update(&w, &now, &s, 0, "down");
	set_tunnel(&s, TUNNEL_UP, "");
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	set_target(&s, 1, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &now, &s, 1, "up target_down:0 target_down:1");
	set_target(&s, 0, TARGET_REACHABLE, "");
	set_target(&s, 1, TARGET_REACHABLE, "");
	set_degraded(&s, true, 2);
	assert_update(&w, &now, &s, 2, "target_up:0 target_up:1 degraded");
	alert_watch_finish(&w);
}

/* Forwards are matched by listen address and target: a changed one starts afresh. */
static void test_watch_forwards_change(void **state)
{
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 2);
	watch_start(&w, &plain, &s, 0);
	set_target(&s, 1, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 0, "");
	assert_expire(&w, &plain, 5, "target_down:1");
	/* a reload drops forward 0 and adds two: the old forward 1 is now 0 and still down */
	s.f[0] = s.f[1];
	snprintf(s.f[1].listen, sizeof(s.f[1].listen), "127.0.0.1:6000");
	snprintf(s.f[2].listen, sizeof(s.f[2].listen), "127.0.0.1:6001");
	snprintf(s.f[1].target, sizeof(s.f[1].target), "other:1");
	snprintf(s.f[2].target, sizeof(s.f[2].target), "other:2");
	s.t.n_forwards = 3;
	set_target(&s, 1, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 6, "");
	assert_int_equal(w.n_forwards, 3);
	assert_string_equal(w.forwards[0].target, "db1:5432");
	assert_true(w.forwards[0].debounce.fired);
	assert_false(w.forwards[2].debounce.down);
	assert_true(alert_watch_due(&w) == 11);
	set_target(&s, 0, TARGET_REACHABLE, "");
	set_target(&s, 1, TARGET_REACHABLE, "");
	assert_update(&w, &plain, &s, 7, "target_up:0");
	/* the same listen address with another target is another forward */
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_expire(&w, &plain, 11, "");
	assert_update(&w, &plain, &s, 12, "");
	assert_expire(&w, &plain, 17, "target_down:0");
	snprintf(s.f[0].target, sizeof(s.f[0].target), "db9:5432");
	assert_update(&w, &plain, &s, 18, "");
	assert_false(w.forwards[0].debounce.fired);
	assert_true(alert_watch_due(&w) == 23);
	alert_watch_finish(&w);
}

/* A reload's new policy re-plans every condition. */
static void test_watch_set_policy(void **state)
{
	const struct alert_policy longer = {.down_after = 30, .send_resolved = true};
	struct alert_watch_state w;
	struct snap s;

	snap_init(&s, 1);
	watch_start(&w, &plain, &s, 0);
	set_target(&s, 0, TARGET_UNREACHABLE, "refused");
	assert_update(&w, &plain, &s, 10, "");
	alert_watch_set_policy(&w, &longer, 12);
	assert_true(alert_watch_due(&w) == 40);
	assert_expire(&w, &longer, 15, "");
	assert_expire(&w, &longer, 40, "target_down:0");
	alert_watch_finish(&w);
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
	    cmocka_unit_test(test_watch_target_down_up),
	    cmocka_unit_test(test_watch_unknown_is_no_evidence),
	    cmocka_unit_test(test_watch_degraded),
	    cmocka_unit_test(test_watch_audit_failed),
	    cmocka_unit_test(test_watch_down_supersedes),
	    cmocka_unit_test(test_watch_flap_resumes),
	    cmocka_unit_test(test_watch_auth_failure),
	    cmocka_unit_test(test_watch_policies),
	    cmocka_unit_test(test_watch_forwards_change),
	    cmocka_unit_test(test_watch_set_policy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
