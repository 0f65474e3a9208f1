#include "sidecar_audit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit_probe.h"
#include "clock.h"
#include "config.h"
#include "log.h"

struct sidecar_audit {
	struct ev_loop *loop;
	struct tunnel *t;
	ev_timer next;	 /* the next audit falls due */
	ev_timer wake;	 /* the audit under way: its deadline, or the end of a command's time */
	bool due;	 /* due and not started: starts when the session is up */
	bool running;	 /* the plan has work or something in flight */
	bool timed_out;	 /* past its deadline: what is in flight is carried to its end */
	double deadline; /* clock_now() */
	struct audit_plan plan;
	struct audit_report report;
	struct audit_session_ops ops;
};

/* A command's output is read for at most this share of the audit's time. */
#define READ_SHARE 3

static const char *name_of(const struct sidecar_audit *a)
{
	return tunnel_config(a->t)->name;
}

void sidecar_from_report(const struct audit_report *r, struct status_sidecar *out)
{
	memset(out, 0, sizeof(*out));
	out->checked = true;
	out->state = SIDECAR_HARDENED;
	for (size_t i = 0; i < r->n; i++) {
		const struct audit_finding *f = &r->items[i];

		if (f->result != AUDIT_FAIL)
			continue;
		out->state = SIDECAR_NOT_HARDENED;
		if (out->n_failed < SIDECAR_FAILED_MAX)
			snprintf(out->failed[out->n_failed], sizeof(out->failed[0]), "%s%s%.*s",
				 f->check, f->subject[0] ? " " : "",
				 (int)(sizeof(out->failed[0]) - 64), f->subject);
		out->n_failed++;
	}
}

/* The state is unknown for `why` (the last finished audit's time stays). */
static void set_unknown(struct sidecar_audit *a, const char *why)
{
	struct status_sidecar s = {.state = SIDECAR_UNKNOWN};

	snprintf(s.error, sizeof(s.error), "%s", why);
	tunnel_set_sidecar(a->t, &s);
}

static void log_verdict(const struct sidecar_audit *a, const struct status_sidecar *s)
{
	if (s->state == SIDECAR_HARDENED) {
		log_info("tunnel %s: sidecar audit: hardened (%zu checks)", name_of(a),
			 a->report.n);
		return;
	}
	log_warn("tunnel %s: sidecar audit: not hardened, %zu check%s failed", name_of(a),
		 s->n_failed, s->n_failed == 1 ? "" : "s");
	for (size_t i = 0; i < a->report.n; i++) {
		const struct audit_finding *f = &a->report.items[i];

		if (f->result == AUDIT_FAIL)
			log_warn("tunnel %s: sidecar audit: %s%s%s: %s; fix: %s", name_of(a),
				 f->check, f->subject[0] ? " " : "", f->subject, f->detail,
				 f->fix[0] ? f->fix : "-");
	}
}

/* The plan ended: records what it found, unless it was cut short. */
static void audit_end(struct sidecar_audit *a, const char *failure)
{
	struct status_sidecar s;

	ev_timer_stop(a->loop, &a->wake);
	a->running = false;
	if (failure) {
		log_info("tunnel %s: sidecar audit could not finish: %s", name_of(a), failure);
		set_unknown(a, failure);
	} else if (!a->timed_out) {
		sidecar_from_report(&a->report, &s);
		log_verdict(a, &s);
		tunnel_set_sidecar(a->t, &s);
	}
	audit_report_finish(&a->report);
}

/* Runs the wake timer at the deadline, or sooner when the plan asks for it. */
static void arm_wake(struct sidecar_audit *a)
{
	double at = a->timed_out ? 0 : a->deadline, plan = audit_plan_wake(&a->plan);

	if (plan > 0 && (at == 0 || plan < at))
		at = plan;
	ev_timer_stop(a->loop, &a->wake);
	if (at == 0)
		return;
	at -= clock_now();
	ev_timer_set(&a->wake, at > 0.001 ? at : 0.001, 0.);
	ev_timer_start(a->loop, &a->wake);
}

static void audit_start(struct sidecar_audit *a)
{
	const struct tunnel_config *cfg = tunnel_config(a->t);
	double timeout = (double)cfg->connect_timeout_ms / 1000.0;

	a->due = false;
	a->running = true;
	a->timed_out = false;
	a->deadline = clock_now() + timeout;
	audit_report_init(&a->report);
	audit_plan_init(&a->plan, cfg, AUDIT_SCOPE_LIVE, NULL, 0, timeout / READ_SHARE);
	log_debug("tunnel %s: sidecar audit started", cfg->name);
	ev_timer_stop(a->loop, &a->next);
	ev_timer_set(&a->next, (double)cfg->audit_interval_ms / 1000.0, 0.);
	ev_timer_start(a->loop, &a->next);
	arm_wake(a);
	tunnel_want_pump(a->t);
}

static void job_on_up(void *userdata)
{
	struct sidecar_audit *a = userdata;

	if (a->due && !a->running)
		audit_start(a);
}

static int job_on_input(void *userdata)
{
	struct sidecar_audit *a = userdata;
	LIBSSH2_SESSION *s = tunnel_session(a->t);
	int rc;

	if (!a->running || !s)
		return 0;
	rc = audit_plan_run(&a->plan, s, &a->ops, &a->report);
	if (rc == LIBSSH2_ERROR_EAGAIN) {
		arm_wake(a);
		return 0;
	}
	if (rc) {
		audit_end(a, "the session failed during the audit");
		return rc;
	}
	audit_end(a, a->report.out_of_memory ? "out of memory" : NULL);
	/* one fell due while a timed-out audit was finishing what it had in flight */
	if (a->due)
		audit_start(a);
	return 0;
}

static bool job_busy(void *userdata)
{
	struct sidecar_audit *a = userdata;

	return a->running && audit_plan_busy(&a->plan);
}

/* The session ended: the plan's channels went with it; the audit runs again once it is
 * back. */
static void job_on_down(void *userdata)
{
	struct sidecar_audit *a = userdata;

	if (!a->running)
		return;
	audit_plan_forget(&a->plan);
	a->due = true;
	audit_end(a, a->timed_out ? NULL : "the session ended during the audit");
}

static void next_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sidecar_audit *a = w->data;

	a->due = true;
	if (!a->running && tunnel_session(a->t))
		audit_start(a);
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct sidecar_audit *a = w->data;
	char why[96];

	if (a->running && !a->timed_out && clock_now() >= a->deadline) {
		/* what is in flight is carried to its end; its answer is not waited for */
		a->timed_out = true;
		audit_plan_stop(&a->plan);
		snprintf(why, sizeof(why), "no answer within %.1fs (connect_timeout)",
			 (double)tunnel_config(a->t)->connect_timeout_ms / 1000.0);
		log_info("tunnel %s: sidecar audit could not finish: %s", name_of(a), why);
		set_unknown(a, why);
	}
	tunnel_want_pump(a->t);
}

static int ops_open(void *userdata, LIBSSH2_CHANNEL **ret, const char *type, unsigned type_len,
		    unsigned window, unsigned packet, const char *msg, unsigned msg_len)
{
	struct sidecar_audit *a = userdata;

	return tunnel_channel_open(a->t, ret, type, type_len, window, packet, msg, msg_len);
}

static bool ops_global_begin(void *userdata)
{
	struct sidecar_audit *a = userdata;

	return tunnel_global_request_begin(a->t);
}

static void ops_global_end(void *userdata)
{
	struct sidecar_audit *a = userdata;

	tunnel_global_request_end(a->t);
}

/* The tunnel is being destroyed: its session (and the plan's channels) next. */
static void job_on_destroy(void *userdata)
{
	struct sidecar_audit *a = userdata;

	ev_timer_stop(a->loop, &a->next);
	ev_timer_stop(a->loop, &a->wake);
	audit_report_finish(&a->report);
	free(a);
}

int sidecar_audit_attach(struct ev_loop *loop, struct tunnel *t)
{
	struct tunnel_job_ops job = {
	    .on_up = job_on_up,
	    .on_input = job_on_input,
	    .busy = job_busy,
	    .on_down = job_on_down,
	    .on_destroy = job_on_destroy,
	};
	struct sidecar_audit *a;

	if (tunnel_config(t)->audit_interval_ms == 0) {
		struct status_sidecar off = {.state = SIDECAR_UNKNOWN};

		snprintf(off.error, sizeof(off.error), "not audited: audit_interval is 0");
		tunnel_set_sidecar(t, &off);
		return 0;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->loop = loop;
	a->t = t;
	a->due = true;
	a->ops = (struct audit_session_ops){
	    .userdata = a,
	    .open = ops_open,
	    .global_begin = ops_global_begin,
	    .global_end = ops_global_end,
	};
	ev_timer_init(&a->next, next_cb, 1., 0.);
	ev_timer_init(&a->wake, wake_cb, 1., 0.);
	a->next.data = a->wake.data = a;
	set_unknown(a, "not audited yet: the first audit runs once the tunnel is up");
	job.userdata = a;
	tunnel_set_job(t, &job);
	return 0;
}
