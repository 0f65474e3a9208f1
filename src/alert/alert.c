#include "alert.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alert_delivery.h"
#include "clock.h"
#include "duration.h"
#include "log.h"
#include "redact.h"

/* The tests asked for by one `alert-test`; the callback runs once all have finished. */
struct alert_test_run {
	struct alerter *alerter;
	alerter_test_cb cb;
	void *userdata;
	size_t n, pending, failed;
	ev_timer done; /* reports from the loop, never from within alerter_test() */
	struct alert_test_run *next;
	char *results[]; /* per target, in config order */
};

static void target_kick(struct alert_target *t);
static void delivery_attempt(struct alert_delivery *d);

static const char *target_kind(const struct alert_target *t)
{
	return t->cfg->url ? "POST" : "exec";
}

/* "https://hooks.example.com/..." or the program's path: what logs may show. */
static void target_where(const struct alert_target *t, char *buf, size_t size)
{
	if (t->cfg->url)
		url_redact(t->cfg->url, buf, size);
	else
		snprintf(buf, size, "%s", t->cfg->exec);
}

/* "down event for tunnel t1", "target_down event for tunnel t1 (pg:5432)", "test event". */
static void delivery_what(const struct alert_delivery *d, char *buf, size_t size)
{
	const struct alert_event *e = &d->event;

	if (e->kind == ALERT_EVENT_TEST)
		snprintf(buf, size, "test event");
	else if (!e->tunnel[0])
		snprintf(buf, size, "%s%s event", d->resend ? "re-sent " : "",
			 alert_event_str(e->kind));
	else
		snprintf(buf, size, "%s%s event for tunnel %s%s%s%s", d->resend ? "re-sent " : "",
			 alert_event_str(e->kind), e->tunnel, e->target[0] ? " (" : "", e->target,
			 e->target[0] ? ")" : "");
}

static void test_run_free(struct alert_test_run *run)
{
	struct alerter *a = run->alerter;

	ev_timer_stop(a->loop, &run->done);
	for (struct alert_test_run **p = &a->runs; *p; p = &(*p)->next) {
		if (*p == run) {
			*p = run->next;
			break;
		}
	}
	for (size_t i = 0; i < run->n; i++)
		free(run->results[i]);
	free(run);
}

static void test_run_report(struct alert_test_run *run)
{
	char *body = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&body, &len);

	for (size_t i = 0; out && i < run->n; i++)
		if (run->results[i])
			fprintf(out, "%s\n", run->results[i]);
	if (!out || fclose(out) != 0) {
		free(body);
		body = NULL;
	}
	run->cb(run->userdata, run->n, run->failed, body ? body : "out of memory\n");
	free(body);
	test_run_free(run);
}

static void test_run_done_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	test_run_report(w->data);
}

__attribute__((format(printf, 4, 5))) static void
test_run_result(struct alert_test_run *run, size_t slot, bool ok, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&run->results[slot], fmt, ap) < 0)
		run->results[slot] = NULL;
	va_end(ap);
	if (!ok)
		run->failed++;
	if (--run->pending == 0)
		ev_timer_start(run->alerter->loop, &run->done);
}

static void delivery_abort_attempt(struct alert_delivery *d)
{
	struct alerter *a = d->target->alerter;

	ev_timer_stop(a->loop, &d->retry);
	ev_timer_stop(a->loop, &d->deadline);
	alert_http_abort(d);
	alert_exec_abort(d);
}

/* Unlinks and frees; a test delivery reports `why` first. */
static void delivery_free(struct alert_delivery *d, const char *why)
{
	if (d->run)
		test_run_result(d->run, d->slot, false, "%s: %s", d->target->name, why);
	delivery_abort_attempt(d);
	list_remove(&d->link);
	free(d);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	delivery_attempt(w->data);
}

static void delivery_done(struct alert_delivery *d, enum alert_outcome outcome, const char *result)
{
	struct alert_target *t = d->target;
	struct alerter *a = t->alerter;
	char what[640];

	delivery_abort_attempt(d);
	delivery_what(d, what, sizeof(what));
	if (d->run) {
		struct alert_test_run *run = d->run;

		d->run = NULL;
		if (outcome == ALERT_OUTCOME_OK) {
			t->sent[ALERT_EVENT_TEST]++;
			log_info("alert %s: sent %s (%s)", t->name, what, result);
		} else {
			t->failed++;
			log_warn("alert %s: %s failed: %s", t->name, what, result);
		}
		test_run_result(run, d->slot, outcome == ALERT_OUTCOME_OK, "%s: %s%s", t->name,
				outcome == ALERT_OUTCOME_OK ? "" : "failed: ", result);
		list_remove(&d->link);
		free(d);
		return;
	}
	if (outcome == ALERT_OUTCOME_OK) {
		t->sent[d->event.kind]++;
		log_info("alert %s: sent %s (%s%s)", t->name, what, result,
			 d->attempts > 1 ? ", after retries" : "");
	} else if (outcome == ALERT_OUTCOME_RETRY && d->attempts < ALERT_ATTEMPTS_MAX) {
		uint64_t delay = backoff_next(&d->backoff);
		char wait[32];

		duration_format(delay, wait, sizeof(wait));
		log_warn("alert %s: %s: attempt %u of %d failed: %s; retrying in %s", t->name, what,
			 d->attempts, ALERT_ATTEMPTS_MAX, result, wait);
		ev_timer_set(&d->retry, (double)delay / 1000.0, 0.);
		ev_timer_start(a->loop, &d->retry);
		return;
	} else {
		t->failed++;
		log_err("alert %s: giving up on %s after %u attempt%s: %s", t->name, what,
			d->attempts, d->attempts == 1 ? "" : "s", result);
	}
	list_remove(&d->link);
	t->queued--;
	free(d);
	t->busy = false;
	target_kick(t);
}

static void delivery_start(struct alert_delivery *d, uint64_t budget_ms)
{
	if (d->target->cfg->url)
		alert_http_start(d, budget_ms);
	else
		alert_exec_start(d);
}

static void delivery_attempt(struct alert_delivery *d)
{
	struct alert_target *t = d->target;
	char where[300], what[640];

	d->attempts++;
	d->timeout_ms = t->cfg->timeout_ms;
	if (d->run && d->timeout_ms > ALERT_TEST_TIMEOUT_MS)
		d->timeout_ms = ALERT_TEST_TIMEOUT_MS;
	if (log_get_level() >= LOG_DEBUG) {
		target_where(t, where, sizeof(where));
		delivery_what(d, what, sizeof(what));
		log_debug("alert %s: %s %s to %s (attempt %u)", t->name, target_kind(t), what,
			  where, d->attempts);
		/* header names only: their values are secrets */
		for (size_t i = 0; t->cfg->url && i < t->cfg->n_headers; i++)
			log_debug("alert %s: with header %.*s", t->name,
				  (int)strcspn(t->cfg->headers[i], ":"), t->cfg->headers[i]);
	}
	delivery_start(d, d->timeout_ms);
}

static struct alert_delivery *delivery_new(struct alert_target *t, const struct alert_event *e)
{
	struct alert_delivery *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->target = t;
	d->event = *e;
	list_init(&d->link);
	backoff_init(&d->backoff, ALERT_RETRY_FIRST_MS, ALERT_RETRY_MAX_MS,
		     (uint64_t)getpid() * 2654435761u ^ (uint64_t)(uintptr_t)d);
	ev_timer_init(&d->retry, retry_cb, 1., 0.);
	d->retry.data = d;
	/* alert_http.c and alert_exec.c set its callback when they arm it */
	ev_timer_init(&d->deadline, NULL, 1., 0.);
	d->deadline.data = d;
	list_init(&d->trust_link);
	return d;
}

static void target_kick(struct alert_target *t)
{
	if (t->busy || list_empty(&t->queue))
		return;
	t->busy = true;
	delivery_attempt(list_entry(t->queue.next, struct alert_delivery, link));
}

static void target_enqueue(struct alert_target *t, const struct alert_event *e, bool resend)
{
	struct alert_delivery *d;
	struct list *pos, *tmp;

	if (resend) {
		/* one re-send waiting per alert is enough */
		list_for_each_safe(pos, tmp, &t->queue)
		{
			d = list_entry(pos, struct alert_delivery, link);
			if (d->event.kind == e->kind && strcmp(d->event.tunnel, e->tunnel) == 0 &&
			    strcmp(d->event.forward, e->forward) == 0 &&
			    strcmp(d->event.target, e->target) == 0 &&
			    !(t->busy && pos == t->queue.next))
				return;
		}
	}
	if (t->queued >= ALERT_QUEUE_MAX) {
		/* the oldest that is not being delivered right now */
		struct list *victim = t->busy ? t->queue.next->next : t->queue.next;
		struct alert_delivery *old = list_entry(victim, struct alert_delivery, link);
		char what[640];

		delivery_what(old, what, sizeof(what));
		log_warn("alert %s: %d events waiting: dropping the oldest, the %s", t->name,
			 ALERT_QUEUE_MAX, what);
		t->failed++;
		t->queued--;
		delivery_free(old, "dropped");
	}
	d = delivery_new(t, e);
	if (!d) {
		log_err("alert %s: out of memory: %s event for tunnel %s lost", t->name,
			alert_event_str(e->kind), e->tunnel);
		t->failed++;
		return;
	}
	d->resend = resend;
	list_insert_tail(&t->queue, &d->link);
	t->queued++;
	target_kick(t);
}

static void target_set_config(struct alert_target *t, const struct alert_config *cfg)
{
	t->cfg = cfg;
	t->policy.down_after = (double)cfg->down_after_ms / 1000.0;
	t->policy.resend =
	    cfg->url && cfg->format == ALERT_FORMAT_ALERTMANAGER ? ALERTMANAGER_RESEND_SEC : 0;
	t->policy.send_resolved = cfg->send_resolved;
}

static void target_destroy(struct alert_target *t, const char *why)
{
	struct list *pos, *tmp;
	size_t dropped = t->queued;

	if (dropped)
		log_notice("alert %s: %s: dropping %zu undelivered event%s", t->name, why, dropped,
			   dropped == 1 ? "" : "s");
	list_for_each_safe(pos, tmp, &t->queue)
	    delivery_free(list_entry(pos, struct alert_delivery, link), why);
	list_for_each_safe(pos, tmp, &t->tests)
	    delivery_free(list_entry(pos, struct alert_delivery, link), why);
	alert_target_watch_drop_all(t);
	list_remove(&t->link);
	free(t);
}

static struct alert_target *target_find(struct alerter *a, const char *name)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &a->targets)
	{
		struct alert_target *t = list_entry(pos, struct alert_target, link);

		if (strcmp(t->name, name) == 0)
			return t;
	}
	return NULL;
}

static struct alert_target *target_create(struct alerter *a, const struct alert_config *cfg)
{
	struct alert_target *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->alerter = a;
	snprintf(t->name, sizeof(t->name), "%s", cfg->name);
	list_init(&t->watches);
	list_init(&t->queue);
	list_init(&t->tests);
	target_set_config(t, cfg);
	return t;
}

/* Sends the daemon's event to every target that wants it: all of them while it fires,
 * those with send_resolved when it ends, those that re-send (Alertmanager) for a re-send. */
static void daemon_event_send(struct alerter *a, bool resend)
{
	const struct alert_event *e = &a->daemon_event;
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &a->targets)
	{
		struct alert_target *t = list_entry(pos, struct alert_target, link);

		if (resend ? t->policy.resend <= 0
			   : !alert_event_firing(e->kind) && !t->policy.send_resolved)
			continue;
		if (!resend)
			log_notice("alert %s: %s: %s", t->name, alert_event_str(e->kind),
				   e->reason);
		target_enqueue(t, e, resend);
	}
}

static void daemon_event_stamp(struct alerter *a)
{
	struct alert_event *e = &a->daemon_event;
	double ago = clock_now() - a->daemon_since;

	e->timestamp = clock_wall();
	e->down_for_seconds = ago < 0 ? 0 : ago;
}

static void daemon_resend_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct alerter *a = w->data;

	daemon_event_stamp(a);
	daemon_event_send(a, true);
}

void alerter_daemon_event(struct alerter *a, enum alert_event_kind kind, const char *reason,
			  double for_seconds)
{
	struct alert_event *e;
	bool firing = alert_event_firing(kind);
	double ago;

	if (!a || firing == a->daemon_firing)
		return;
	e = &a->daemon_event;
	if (firing) {
		memset(e, 0, sizeof(*e));
		snprintf(e->node, sizeof(e->node), "%s", a->node);
		a->daemon_since = clock_now() - for_seconds;
	}
	e->kind = kind;
	snprintf(e->reason, sizeof(e->reason), "%s", reason);
	daemon_event_stamp(a);
	if (firing) {
		/* it began for_seconds ago, on the wall clock */
		ago = e->down_for_seconds;
		e->since = e->timestamp;
		e->since.tv_sec -= (time_t)ago;
		e->since.tv_nsec -= (long)((ago - (double)(time_t)ago) * 1e9);
		if (e->since.tv_nsec < 0) {
			e->since.tv_nsec += 1000000000L;
			e->since.tv_sec--;
		}
		ev_timer_set(&a->daemon_resend, ALERTMANAGER_RESEND_SEC, ALERTMANAGER_RESEND_SEC);
		ev_timer_start(a->loop, &a->daemon_resend);
	} else {
		ev_timer_stop(a->loop, &a->daemon_resend);
	}
	a->daemon_firing = firing;
	daemon_event_send(a, false);
}

/* For alert_http.c, alert_exec.c and alert_target_watch.c, which sit below this file. */
static const struct alert_queue_ops queue_ops = {
    .delivery_done = delivery_done,
    .delivery_start = delivery_start,
    .target_enqueue = target_enqueue,
};

int alerter_create(struct ev_loop *loop, struct alerter **ret)
{
	struct alerter *a = calloc(1, sizeof(*a));

	if (!a)
		return -ENOMEM;
	a->loop = loop;
	a->queue = &queue_ops;
	list_init(&a->targets);
	ev_timer_init(&a->daemon_resend, daemon_resend_cb, 1., 0.);
	a->daemon_resend.data = a;
	if (gethostname(a->node, sizeof(a->node) - 1) < 0)
		snprintf(a->node, sizeof(a->node), "unknown");
	if (alert_http_init(a) < 0) {
		alerter_destroy(a);
		return -ENOMEM;
	}
	*ret = a;
	return 0;
}

void alerter_destroy(struct alerter *a)
{
	struct list *pos, *tmp;

	if (!a)
		return;
	list_for_each_safe(pos, tmp, &a->targets)
	    target_destroy(list_entry(pos, struct alert_target, link), "shutting down");
	/* test runs whose last delivery just ended: report now, the loop is going away */
	while (a->runs)
		test_run_report(a->runs);
	alert_http_finish(a);
	ev_timer_stop(a->loop, &a->daemon_resend);
	free(a);
}

int alerter_sync(struct alerter *a, const struct config *cfg, const struct status_tunnel *tunnels,
		 size_t n_tunnels)
{
	struct list *pos, *tmp, fresh;
	int r = 0;

	list_for_each_safe(pos, tmp, &a->targets) list_entry(pos, struct alert_target, link)->seen =
	    false;
	list_init(&fresh);
	for (size_t i = 0; i < cfg->n_alerts; i++) {
		struct alert_target *t = target_find(a, cfg->alerts[i].name);

		if (!t) {
			t = target_create(a, &cfg->alerts[i]);
			if (!t) {
				r = -ENOMEM;
				continue;
			}
		} else {
			list_remove(&t->link);
			target_set_config(t, &cfg->alerts[i]);
		}
		t->seen = true;
		/* rebuilt in config order */
		list_insert_tail(&fresh, &t->link);
	}
	alert_http_sync(a, cfg);
	list_for_each_safe(pos, tmp, &a->targets) target_destroy(
	    list_entry(pos, struct alert_target, link), "removed from the configuration");
	/* move `fresh` into a->targets */
	list_init(&a->targets);
	list_for_each_safe(pos, tmp, &fresh)
	{
		list_remove(pos);
		list_insert_tail(&a->targets, pos);
	}
	list_for_each_safe(pos, tmp, &a->targets)
	{
		struct alert_target *t = list_entry(pos, struct alert_target, link);

		if (alert_target_watch_sync(t, cfg, tunnels, n_tunnels) < 0)
			r = -ENOMEM;
	}
	return r;
}

void alerter_tunnel_update(struct alerter *a, const struct status_tunnel *snap)
{
	struct list *pos, *tmp;

	if (!a)
		return;
	list_for_each_safe(pos, tmp, &a->targets)
	{
		alert_target_watch_update(list_entry(pos, struct alert_target, link), snap);
	}
}

int alerter_test(struct alerter *a, const char *name, alerter_test_cb cb, void *userdata)
{
	struct alert_test_run *run;
	struct list *pos, *tmp;
	struct timespec wall;
	struct alert_event e = {.kind = ALERT_EVENT_TEST};
	size_t n = 0;

	list_for_each_safe(pos, tmp, &a->targets)
	{
		struct alert_target *t = list_entry(pos, struct alert_target, link);

		if (!name || strcmp(t->name, name) == 0)
			n++;
	}
	if (n == 0)
		return -ENOENT;
	run = calloc(1, sizeof(*run) + n * sizeof(*run->results));
	if (!run)
		return -ENOMEM;
	*run = (struct alert_test_run){
	    .alerter = a, .cb = cb, .userdata = userdata, .n = n, .pending = n, .next = a->runs};
	ev_timer_init(&run->done, test_run_done_cb, 0., 0.);
	run->done.data = run;
	a->runs = run;
	wall = clock_wall();
	e.since = wall;
	e.timestamp = wall;
	snprintf(e.node, sizeof(e.node), "%s", a->node);
	snprintf(e.reason, sizeof(e.reason), "test event sent by moletun ctl alert-test");
	n = 0;
	list_for_each_safe(pos, tmp, &a->targets)
	{
		struct alert_target *t = list_entry(pos, struct alert_target, link);
		struct alert_delivery *d;

		if (name && strcmp(t->name, name) != 0)
			continue;
		d = delivery_new(t, &e);
		if (!d) {
			test_run_result(run, n++, false, "%s: out of memory", t->name);
			continue;
		}
		d->run = run;
		d->slot = n++;
		list_insert_tail(&t->tests, &d->link);
		log_info("alert %s: sending a test event", t->name);
		delivery_attempt(d);
	}
	return 0;
}

int alerter_snapshot(const struct alerter *a, struct status *s)
{
	struct list *pos, *tmp;
	size_t n = 0;

	list_for_each_safe(pos, tmp, &((struct alerter *)a)->targets) n++;
	s->alerts = calloc(n ? n : 1, sizeof(*s->alerts));
	if (!s->alerts)
		return -ENOMEM;
	s->n_alerts = 0;
	list_for_each_safe(pos, tmp, &((struct alerter *)a)->targets)
	{
		const struct alert_target *t = list_entry(pos, struct alert_target, link);
		struct status_alert *sa = &s->alerts[s->n_alerts++];

		snprintf(sa->name, sizeof(sa->name), "%s", t->name);
		memcpy(sa->sent, t->sent, sizeof(sa->sent));
		sa->failed = t->failed;
	}
	return 0;
}
