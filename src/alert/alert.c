#include "alert.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alert_debounce.h"
#include "alert_format.h"
#include "alert_trust.h"
#include "alert_watch.h"
#include "backoff.h"
#include "build_config.h"
#include "clock.h"
#include "duration.h"
#include "fd.h"
#include "list.h"
#include "log.h"
#include "redact.h"

extern char **environ;

struct alerter;
struct alert_target;

/* A target watching a tunnel (by name, so it survives a tunnel restart). */
struct alert_watch {
	struct list link; /* in target->watches */
	struct alert_target *target;
	char tunnel[128];
	char host[256];
	uint16_t port;
	double degraded_rtt; /* seconds, the tunnel's degraded_rtt (for reasons) */
	struct alert_watch_state state;
	ev_timer timer;
	bool seen; /* alerter_sync's mark */
};

/* The tests asked for by one `alert-test`; the callback runs once all have finished. */
struct alert_test_run {
	struct alerter *alerter;
	alerter_test_cb cb;
	void *userdata;
	size_t n, pending, failed;
	char **results; /* per target, in config order */
	ev_timer done;	/* reports from the loop, never from within alerter_test() */
	struct alert_test_run *next;
};

enum outcome {
	OUTCOME_OK,
	OUTCOME_RETRY, /* worth another attempt */
	OUTCOME_FAIL,  /* another attempt would fail the same way */
};

struct alert_delivery {
	struct list link; /* in target->queue, or target->tests */
	struct alert_target *target;
	struct alert_event event;
	bool resend;		    /* an Alertmanager re-send (never queued twice) */
	struct alert_test_run *run; /* test deliveries only */
	size_t slot;
	unsigned attempts;
	struct backoff backoff;
	ev_timer retry;	   /* the wait before the next attempt */
	ev_timer deadline; /* exec: kill the program; HTTPS: stop waiting for the CA store */
	struct list trust_link; /* in alerter->trust_waiting while trust_waiting */
	bool trust_waiting;
	uint64_t timeout_ms;
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	char errbuf[CURL_ERROR_SIZE];
	pid_t pid;
	ev_child child;
	bool killed; /* exec timed out */
};

struct alert_target {
	struct list link; /* in alerter->targets, in config order */
	struct alerter *alerter;
	const struct alert_config *cfg;
	char name[128];
	struct alert_policy policy;
	struct list watches;
	struct list queue; /* the head is being delivered when busy */
	size_t queued;
	bool busy;
	struct list tests;
	uint64_t sent[ALERT_EVENT_COUNT];
	uint64_t failed;
	bool seen;
};

struct curl_sock {
	struct list link; /* in alerter->socks */
	struct alerter *alerter;
	curl_socket_t fd;
	ev_io io;
};

struct alerter {
	struct ev_loop *loop;
	char node[256];
	CURLM *multi;
	ev_timer curl_timer;
	struct list socks;
	struct list targets;
	struct alert_trust *trust;
	struct list trust_waiting; /* HTTPS deliveries, until the CA certificates are read */
	struct alert_test_run *runs;
	/* the daemon's own condition (metrics_stale) while it stands, for re-sends */
	struct alert_event daemon_event;
	bool daemon_firing;
	double daemon_since; /* monotonic */
	ev_timer daemon_resend;
};

static unsigned curl_users;

static void target_kick(struct alert_target *t);
static void delivery_attempt(struct alert_delivery *d);
static void delivery_start(struct alert_delivery *d, uint64_t budget_ms);
static void check_multi_info(struct alerter *a);

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
	free(run->results);
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
	list_remove(&d->trust_link);
	d->trust_waiting = false;
	if (d->easy) {
		curl_multi_remove_handle(a->multi, d->easy);
		curl_easy_cleanup(d->easy);
		d->easy = NULL;
	}
	curl_slist_free_all(d->headers);
	d->headers = NULL;
	free(d->body);
	d->body = NULL;
	if (d->pid > 0) {
		/* the whole process group: a script's own children go too */
		kill(-d->pid, SIGKILL);
		ev_child_stop(a->loop, &d->child);
		d->pid = 0;
	}
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

/* The end of one attempt: `result` is "HTTP 200", "exit status 3", "timed out ...". */
static void delivery_attempt_done(struct alert_delivery *d, enum outcome outcome,
				  const char *result)
{
	struct alert_target *t = d->target;
	struct alerter *a = t->alerter;
	char what[640];

	delivery_abort_attempt(d);
	delivery_what(d, what, sizeof(what));
	if (d->run) {
		struct alert_test_run *run = d->run;

		d->run = NULL;
		if (outcome == OUTCOME_OK) {
			t->sent[ALERT_EVENT_TEST]++;
			log_info("alert %s: sent %s (%s)", t->name, what, result);
		} else {
			t->failed++;
			log_warn("alert %s: %s failed: %s", t->name, what, result);
		}
		test_run_result(run, d->slot, outcome == OUTCOME_OK, "%s: %s%s", t->name,
				outcome == OUTCOME_OK ? "" : "failed: ", result);
		list_remove(&d->link);
		free(d);
		return;
	}
	if (outcome == OUTCOME_OK) {
		t->sent[d->event.kind]++;
		log_info("alert %s: sent %s (%s%s)", t->name, what, result,
			 d->attempts > 1 ? ", after retries" : "");
	} else if (outcome == OUTCOME_RETRY && d->attempts < ALERT_ATTEMPTS_MAX) {
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

static size_t discard_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

/* libcurl 7.88 opens its connections without SOCK_CLOEXEC; it sets O_NONBLOCK itself. */
static curl_socket_t curl_open_socket_cb(void *userdata, curlsocktype purpose,
					 struct curl_sockaddr *addr)
{
	return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

static bool header_named(const char *header, const char *name)
{
	size_t n = strlen(name);

	return strncasecmp(header, name, n) == 0 && header[n] == ':';
}

/* Starts the transfer, to end within budget_ms. 0, -ENOMEM or -EINVAL. */
static int http_prepare(struct alert_delivery *d, uint64_t budget_ms)
{
	struct alerter *a = d->target->alerter;
	const struct alert_config *cfg = d->target->cfg;
	bool content_type = false;
	size_t body_len;
	CURL *e;

	if (alert_format_body(cfg->format, &d->event, &d->body, &body_len) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_headers; i++) {
		struct curl_slist *l = curl_slist_append(d->headers, cfg->headers[i]);

		if (!l)
			return -ENOMEM;
		d->headers = l;
		content_type |= header_named(cfg->headers[i], "Content-Type");
	}
	if (!content_type) {
		struct curl_slist *l =
		    curl_slist_append(d->headers, "Content-Type: application/json");

		if (!l)
			return -ENOMEM;
		d->headers = l;
	}
	/* no "Expect: 100-continue" round trip */
	{
		struct curl_slist *l = curl_slist_append(d->headers, "Expect:");

		if (!l)
			return -ENOMEM;
		d->headers = l;
	}
	e = curl_easy_init();
	if (!e)
		return -ENOMEM;
	d->easy = e;
	d->errbuf[0] = '\0';
	curl_easy_setopt(e, CURLOPT_URL, cfg->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, d->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, d->headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "moletun/" MOLETUN_VERSION);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)budget_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)budget_ms);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	/* a redirect would carry the Authorization header elsewhere: treat it as a failure */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* webhooks are rare: no idle connections to watch between events */
	curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	/* removing a handle must not wait for a resolver thread (curl >= 7.87) */
	curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, curl_open_socket_cb);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, d);
	if (alert_trust_needed(cfg->url) && alert_trust_use(a->trust, e) < 0)
		return -EINVAL;
	if (curl_multi_add_handle(a->multi, e) != CURLM_OK)
		return -ENOMEM;
	return 0;
}

static void http_done(struct alert_delivery *d, CURLcode rc)
{
	char result[CURL_ERROR_SIZE + 64];
	enum outcome outcome;
	long status = 0;

	if (rc == CURLE_OK) {
		curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
		snprintf(result, sizeof(result), "HTTP %ld", status);
		if (status >= 200 && status < 300)
			outcome = OUTCOME_OK;
		else if (status >= 500 || status == 408 || status == 429)
			outcome = OUTCOME_RETRY;
		else
			outcome = OUTCOME_FAIL;
		delivery_attempt_done(d, outcome, result);
		return;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		char limit[32];

		duration_format(d->timeout_ms, limit, sizeof(limit));
		snprintf(result, sizeof(result), "timed out after %s (%s)", limit,
			 d->errbuf[0] ? d->errbuf : curl_easy_strerror(rc));
	} else {
		snprintf(result, sizeof(result), "%s",
			 d->errbuf[0] ? d->errbuf : curl_easy_strerror(rc));
	}
	switch (rc) {
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_BAD_FUNCTION_ARGUMENT:
		outcome = OUTCOME_FAIL;
		break;
	default:
		outcome = OUTCOME_RETRY;
		break;
	}
	delivery_attempt_done(d, outcome, result);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct alert_delivery *d = w->data;
	char limit[32], result[96];

	if (d->trust_waiting) {
		duration_format(d->timeout_ms, limit, sizeof(limit));
		snprintf(result, sizeof(result),
			 "timed out after %s waiting for the CA certificates to be read", limit);
		delivery_attempt_done(d, OUTCOME_RETRY, result);
		return;
	}
	/* the child watcher reports once it is reaped */
	d->killed = true;
	kill(-d->pid, SIGKILL);
}

static void exec_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct alert_delivery *d = w->data;
	int status = w->rstatus;
	char result[96];
	enum outcome outcome = OUTCOME_RETRY;

	ev_child_stop(loop, w);
	d->pid = 0;
	if (d->killed) {
		char limit[32];

		duration_format(d->timeout_ms, limit, sizeof(limit));
		snprintf(result, sizeof(result), "timed out after %s (killed)", limit);
	} else if (WIFEXITED(status)) {
		snprintf(result, sizeof(result), "exit status %d", WEXITSTATUS(status));
		if (WEXITSTATUS(status) == 0)
			outcome = OUTCOME_OK;
	} else if (WIFSIGNALED(status)) {
		snprintf(result, sizeof(result), "killed by signal %d", WTERMSIG(status));
	} else {
		snprintf(result, sizeof(result), "wait status %d", status);
	}
	delivery_attempt_done(d, outcome, result);
}

/* Starts the program without a shell; 0, or a positive errno from posix_spawn. */
static int exec_spawn(struct alert_delivery *d)
{
	struct alert_target *t = d->target;
	struct alerter *a = t->alerter;
	char *argv[] = {(char *)t->cfg->exec, NULL};
	posix_spawn_file_actions_t actions;
	posix_spawnattr_t attr;
	sigset_t none, all;
	char **env = NULL;
	pid_t pid;
	int err;

	if (!ev_is_default_loop(a->loop))
		return ENOTSUP; /* ev_child needs the default loop */
	if (alert_format_env(&d->event, t->name, environ, &env) < 0)
		return ENOMEM;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&actions);
	posix_spawnattr_init(&attr);
	/* stdin /dev/null, stdout to our stderr (the journal), nothing else inherited */
	posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&actions, 2, 1);
	posix_spawn_file_actions_addclosefrom_np(&actions, 3);
	/* libev may block signals it watches, and SIGPIPE is ignored: undo both; own
	 * process group, so a timeout kills the script's children too */
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
					    POSIX_SPAWN_SETPGROUP);
	err = posix_spawn(&pid, t->cfg->exec, &actions, &attr, argv, env);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&actions);
	alert_env_free(env);
	if (err)
		return err;
	d->pid = pid;
	d->killed = false;
	ev_child_set(&d->child, pid, 0);
	ev_child_start(a->loop, &d->child);
	ev_timer_set(&d->deadline, (double)d->timeout_ms / 1000.0, 0.);
	ev_timer_start(a->loop, &d->deadline);
	return 0;
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

/* The attempt proper: also where an HTTPS one resumes once the CA certificates are read. */
static void delivery_start(struct alert_delivery *d, uint64_t budget_ms)
{
	struct alert_target *t = d->target;
	struct alerter *a = t->alerter;
	char result[128];
	int r;

	if (t->cfg->url && alert_trust_needed(t->cfg->url) && !alert_trust_ready(a->trust)) {
		/* the read is on its way (alerter_sync started it): wait, within the timeout */
		d->trust_waiting = true;
		list_insert_tail(&a->trust_waiting, &d->trust_link);
		ev_timer_set(&d->deadline, (double)budget_ms / 1000.0, 0.);
		ev_timer_start(a->loop, &d->deadline);
		return;
	}
	if (t->cfg->url) {
		r = http_prepare(d, budget_ms);
		if (r == 0)
			return;
		delivery_attempt_done(d, OUTCOME_RETRY,
				      r == -ENOMEM ? "out of memory"
						   : "libcurl refused the CA certificate options");
		return;
	}
	r = exec_spawn(d);
	if (r == 0)
		return;
	snprintf(result, sizeof(result), "cannot run %s: %s", t->cfg->exec, strerror(r));
	delivery_attempt_done(d, OUTCOME_RETRY, result);
}

/* The CA certificates are read: the HTTPS deliveries that waited go on. */
static void trust_ready_cb(void *userdata)
{
	struct alerter *a = userdata;
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &a->trust_waiting)
	{
		struct alert_delivery *d = list_entry(pos, struct alert_delivery, trust_link);
		double left = ev_timer_remaining(a->loop, &d->deadline);

		ev_timer_stop(a->loop, &d->deadline);
		list_remove(&d->trust_link);
		d->trust_waiting = false;
		delivery_start(d, left > 0.001 ? (uint64_t)(left * 1000.0) : 1);
	}
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
	ev_timer_init(&d->deadline, deadline_cb, 1., 0.);
	d->deadline.data = d;
	list_init(&d->trust_link);
	ev_child_init(&d->child, exec_child_cb, 0, 0);
	d->child.data = d;
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

/* The condition a decision is about. */
static const struct alert_debounce *watch_condition(const struct alert_watch *w,
						    const struct alert_decision *dec)
{
	switch (dec->kind) {
	case ALERT_EVENT_TARGET_DOWN:
	case ALERT_EVENT_TARGET_UP:
		return &w->state.forwards[dec->forward].debounce;
	case ALERT_EVENT_DEGRADED:
	case ALERT_EVENT_RECOVERED:
		return &w->state.degraded;
	default:
		return &w->state.tunnel;
	}
}

static void watch_event(struct alert_watch *w, const struct alert_decision *dec, double now,
			struct alert_event *e)
{
	struct alerter *a = w->target->alerter;
	const struct alert_watch_state *st = &w->state;
	double down_since = watch_condition(w, dec)->down_since;
	double ago = now - down_since;
	struct timespec wall = clock_wall();

	memset(e, 0, sizeof(*e));
	e->kind = dec->kind;
	snprintf(e->tunnel, sizeof(e->tunnel), "%s", w->tunnel);
	snprintf(e->node, sizeof(e->node), "%s", a->node);
	snprintf(e->host, sizeof(e->host), "%s", w->host);
	e->port = w->port;
	e->rtt_measured = st->rtt_measured;
	e->rtt = st->rtt;
	switch (dec->kind) {
	case ALERT_EVENT_TARGET_DOWN:
	case ALERT_EVENT_TARGET_UP: {
		const struct alert_forward_watch *f = &st->forwards[dec->forward];

		snprintf(e->forward, sizeof(e->forward), "%s", f->listen);
		snprintf(e->target, sizeof(e->target), "%s", f->target);
		snprintf(e->reason, sizeof(e->reason), "%s",
			 f->error[0] ? f->error : "unreachable");
		break;
	}
	case ALERT_EVENT_DEGRADED:
	case ALERT_EVENT_RECOVERED:
		alert_format_rtt_reason(st->rtt_peak, w->degraded_rtt, e->reason,
					sizeof(e->reason));
		break;
	default:
		snprintf(e->reason, sizeof(e->reason), "%s",
			 st->reason[0] ? st->reason : "not connected yet");
		break;
	}
	e->timestamp = wall;
	e->down_for_seconds = ago < 0 ? 0 : ago;
	/* the outage began `ago` seconds before now, on the wall clock */
	e->since = clock_to_wall_at(down_since, now, wall);
}

static void watch_log(const struct alert_watch *w, const struct alert_event *e)
{
	const char *alert = w->target->name;

	switch (e->kind) {
	case ALERT_EVENT_DOWN:
		log_notice("alert %s: tunnel %s down for %.1fs: %s", alert, w->tunnel,
			   e->down_for_seconds, e->reason);
		break;
	case ALERT_EVENT_UP:
		log_notice("alert %s: tunnel %s up again after %.1fs", alert, w->tunnel,
			   e->down_for_seconds);
		break;
	case ALERT_EVENT_TARGET_DOWN:
		log_notice("alert %s: tunnel %s: target %s unreachable for %.1fs: %s", alert,
			   w->tunnel, e->target, e->down_for_seconds, e->reason);
		break;
	case ALERT_EVENT_TARGET_UP:
		log_notice("alert %s: tunnel %s: target %s reachable again after %.1fs", alert,
			   w->tunnel, e->target, e->down_for_seconds);
		break;
	case ALERT_EVENT_DEGRADED:
		log_notice("alert %s: tunnel %s degraded for %.1fs: %s", alert, w->tunnel,
			   e->down_for_seconds, e->reason);
		break;
	case ALERT_EVENT_RECOVERED:
		log_notice("alert %s: tunnel %s recovered after %.1fs degraded", alert, w->tunnel,
			   e->down_for_seconds);
		break;
	default:
		break;
	}
}

static void watch_act(struct alert_watch *w, const struct alert_decision *decisions, size_t n,
		      double now)
{
	for (size_t i = 0; i < n; i++) {
		struct alert_event e;

		watch_event(w, &decisions[i], now, &e);
		if (!decisions[i].resend)
			watch_log(w, &e);
		target_enqueue(w->target, &e, decisions[i].resend);
	}
}

static void watch_arm(struct alert_watch *w)
{
	struct ev_loop *loop = w->target->alerter->loop;
	double due = alert_watch_due(&w->state), left;

	ev_timer_stop(loop, &w->timer);
	if (due == 0)
		return;
	left = due - clock_now();
	ev_timer_set(&w->timer, left > 0 ? left : 0., 0.);
	ev_timer_start(loop, &w->timer);
}

static void watch_timer_cb(struct ev_loop *loop, ev_timer *timer, int revents)
{
	struct alert_watch *w = timer->data;
	struct alert_target *t = w->target;
	struct alert_decision *decisions;
	double now = clock_now(), due = alert_watch_due(&w->state);
	size_t n;

	/* libev measured from its cached time, a hair before ours: the timer is on time */
	if (now < due)
		now = due;
	decisions = calloc(ALERT_DECISIONS_MAX(w->state.n_forwards), sizeof(*decisions));
	if (!decisions) {
		log_err("alert %s: out of memory: events for tunnel %s delayed", t->name,
			w->tunnel);
		ev_timer_set(&w->timer, 1., 0.);
		ev_timer_start(loop, &w->timer);
		return;
	}
	n = alert_watch_expire(&w->state, &t->policy, now, decisions);
	watch_act(w, decisions, n, now);
	free(decisions);
	watch_arm(w);
}

/* Feeds a snapshot to one watch and sends what it decides. */
static void watch_update(struct alert_watch *w, const struct status_tunnel *snap)
{
	struct alert_target *t = w->target;
	struct alert_decision *decisions;
	double now = clock_now();
	size_t n = 0;

	snprintf(w->host, sizeof(w->host), "%s", snap->host);
	w->port = snap->port;
	decisions = calloc(ALERT_DECISIONS_MAX(snap->n_forwards), sizeof(*decisions));
	if (!decisions || alert_watch_update(&w->state, &t->policy, snap, now, decisions, &n) < 0) {
		log_err("alert %s: out of memory: a change of tunnel %s was missed", t->name,
			w->tunnel);
		n = 0;
	}
	watch_act(w, decisions, n, now);
	free(decisions);
	watch_arm(w);
}

static void watch_destroy(struct alert_watch *w)
{
	ev_timer_stop(w->target->alerter->loop, &w->timer);
	list_remove(&w->link);
	alert_watch_finish(&w->state);
	free(w);
}

static struct alert_watch *watch_find(struct alert_target *t, const char *tunnel)
{
	struct list *pos, *tmp;

	list_for_each_safe(pos, tmp, &t->watches)
	{
		struct alert_watch *w = list_entry(pos, struct alert_watch, link);

		if (strcmp(w->tunnel, tunnel) == 0)
			return w;
	}
	return NULL;
}

static bool target_wants(const struct alert_target *t, const char *tunnel)
{
	if (t->cfg->n_tunnels == 0)
		return true;
	for (size_t i = 0; i < t->cfg->n_tunnels; i++)
		if (strcmp(t->cfg->tunnels[i], tunnel) == 0)
			return true;
	return false;
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
	list_for_each_safe(pos, tmp, &t->watches)
	    watch_destroy(list_entry(pos, struct alert_watch, link));
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

/* Makes sure `t` watches `snap`'s tunnel (when its filter wants it). */
static int target_sync_watch(struct alert_target *t, const struct status_tunnel *snap,
			     const struct config *cfg)
{
	const struct tunnel_config *tc = config_find_tunnel(cfg, snap->name);
	struct alert_watch *w = watch_find(t, snap->name);

	if (!target_wants(t, snap->name))
		return 0;
	if (!w) {
		w = calloc(1, sizeof(*w));
		if (!w)
			return -ENOMEM;
		if (alert_watch_init(&w->state, &t->policy, snap, clock_now()) < 0) {
			free(w);
			return -ENOMEM;
		}
		w->target = t;
		snprintf(w->tunnel, sizeof(w->tunnel), "%s", snap->name);
		ev_timer_init(&w->timer, watch_timer_cb, 1., 0.);
		w->timer.data = w;
		list_insert_tail(&t->watches, &w->link);
	} else {
		alert_watch_set_policy(&w->state, &t->policy, clock_now());
	}
	w->seen = true;
	w->degraded_rtt = tc ? (double)tc->degraded_rtt_ms / 1000.0 : 0;
	/* a new watch, or a restarted tunnel: a new object in its first state */
	watch_update(w, snap);
	return 0;
}

/* libcurl's multi interface on the loop, as in curl's docs/examples/evhiperfifo.c. */

static void curl_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct curl_sock *s = w->data;
	struct alerter *a = s->alerter;
	curl_socket_t fd = s->fd; /* s may be freed by the socket callback below */
	int action =
	    (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	curl_multi_socket_action(a->multi, fd, action, &running);
	check_multi_info(a);
}

static void curl_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct alerter *a = w->data;
	int running;

	curl_multi_socket_action(a->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(a);
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct alerter *a = userp;
	struct curl_sock *s = socketp;
	int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			ev_io_stop(a->loop, &s->io);
			list_remove(&s->link);
			free(s);
		}
		return 0;
	}
	if (!s) {
		/*
		 * Not one of curl_open_socket_cb's: the read end of the socketpair curl's
		 * threaded resolver (7.88) makes without SOCK_CLOEXEC for each lookup. Both
		 * ends exist now, and the write end is never reported: mark every descriptor.
		 */
		if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			fd_cloexec_from(3);
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->alerter = a;
		s->fd = fd;
		ev_io_init(&s->io, curl_io_cb, fd, events);
		s->io.data = s;
		list_insert_tail(&a->socks, &s->link);
		curl_multi_assign(a->multi, fd, s);
	}
	ev_io_stop(a->loop, &s->io);
	ev_io_set(&s->io, fd, events);
	ev_io_start(a->loop, &s->io);
	return 0;
}

/* Only arms the ev_timer: curl forbids calling it back from here. */
static int curl_timer_set_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct alerter *a = userp;

	ev_timer_stop(a->loop, &a->curl_timer);
	if (timeout_ms >= 0) {
		ev_timer_set(&a->curl_timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(a->loop, &a->curl_timer);
	}
	return 0;
}

static void check_multi_info(struct alerter *a)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(a->multi, &left))) {
		struct alert_delivery *d = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&d);
		if (d)
			http_done(d, msg->data.result);
	}
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

int alerter_create(struct ev_loop *loop, struct alerter **ret)
{
	struct alerter *a;

	if (curl_users == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -ENOMEM;
	curl_users++;
	a = calloc(1, sizeof(*a));
	if (!a) {
		if (--curl_users == 0)
			curl_global_cleanup();
		return -ENOMEM;
	}
	a->loop = loop;
	list_init(&a->socks);
	list_init(&a->targets);
	list_init(&a->trust_waiting);
	ev_timer_init(&a->curl_timer, curl_timer_cb, 1., 0.);
	a->curl_timer.data = a;
	ev_timer_init(&a->daemon_resend, daemon_resend_cb, 1., 0.);
	a->daemon_resend.data = a;
	if (gethostname(a->node, sizeof(a->node) - 1) < 0)
		snprintf(a->node, sizeof(a->node), "unknown");
	a->multi = curl_multi_init();
	if (!a->multi || alert_trust_create(loop, trust_ready_cb, a, &a->trust) < 0) {
		alerter_destroy(a);
		return -ENOMEM;
	}
	/* its wake-up socketpair (curl 7.88) has no close-on-exec */
	fd_cloexec_from(3);
	curl_multi_setopt(a->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
	curl_multi_setopt(a->multi, CURLMOPT_SOCKETDATA, a);
	curl_multi_setopt(a->multi, CURLMOPT_TIMERFUNCTION, curl_timer_set_cb);
	curl_multi_setopt(a->multi, CURLMOPT_TIMERDATA, a);
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
	if (a->multi)
		curl_multi_cleanup(a->multi);
	alert_trust_destroy(a->trust);
	ev_timer_stop(a->loop, &a->curl_timer);
	ev_timer_stop(a->loop, &a->daemon_resend);
	list_for_each_safe(pos, tmp, &a->socks)
	{
		struct curl_sock *s = list_entry(pos, struct curl_sock, link);

		ev_io_stop(a->loop, &s->io);
		list_remove(&s->link);
		free(s);
	}
	free(a);
	if (--curl_users == 0)
		curl_global_cleanup();
}

int alerter_sync(struct alerter *a, const struct config *cfg, const struct status_tunnel *tunnels,
		 size_t n_tunnels)
{
	struct list *pos, *tmp, fresh;
	bool https = false;
	int r = 0;

	list_for_each_safe(pos, tmp, &a->targets) list_entry(pos, struct alert_target, link)->seen =
	    false;
	list_init(&fresh);
	for (size_t i = 0; i < cfg->n_alerts; i++) {
		struct alert_target *t = target_find(a, cfg->alerts[i].name);

		if (cfg->alerts[i].url && alert_trust_needed(cfg->alerts[i].url))
			https = true;
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
	/* read off the loop, before the first delivery needs them; again at each reload */
	if (https)
		alert_trust_load(a->trust);
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
		struct list *wpos, *wtmp;

		list_for_each_safe(wpos, wtmp, &t->watches)
		    list_entry(wpos, struct alert_watch, link)
			->seen = false;
		for (size_t i = 0; i < n_tunnels; i++)
			if (target_sync_watch(t, &tunnels[i], cfg) < 0)
				r = -ENOMEM;
		list_for_each_safe(wpos, wtmp, &t->watches)
		{
			struct alert_watch *w = list_entry(wpos, struct alert_watch, link);

			if (!w->seen)
				watch_destroy(w);
		}
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
		struct alert_target *t = list_entry(pos, struct alert_target, link);
		struct alert_watch *w = watch_find(t, snap->name);

		if (w)
			watch_update(w, snap);
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
	run = calloc(1, sizeof(*run));
	if (!run)
		return -ENOMEM;
	run->results = calloc(n, sizeof(*run->results));
	if (!run->results) {
		free(run);
		return -ENOMEM;
	}
	run->alerter = a;
	run->cb = cb;
	run->userdata = userdata;
	run->n = n;
	run->pending = n;
	ev_timer_init(&run->done, test_run_done_cb, 0., 0.);
	run->done.data = run;
	run->next = a->runs;
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
