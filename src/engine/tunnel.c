#include "tunnel.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backoff.h"
#include "clock.h"
#include "duration.h"
#include "forward.h"
#include "health.h"
#include "link.h"
#include "log.h"
#include "path.h"
#include "setup_gate.h"
#include "tunnel_state.h"
#include "window.h"

/* Up this long before backoff starts over from backoff_initial. */
#define STABLE_AFTER 5.0

struct tunnel {
	struct ev_loop *loop;
	const struct tunnel_config *cfg;
	struct identity identity;
	struct identity jump_identity; /* proxy_jump_identity_file; empty: hops use identity */
	enum tunnel_state state;
	double since;		/* clock_now() of the last state change */
	char name[160];		/* "tunnel NAME", the destination link's log prefix */
	char (*hop_names)[160]; /* per bastion: "tunnel NAME via HOST:PORT" */
	char last_error[256];
	bool auth_failure;    /* the last failure needs a human: retry at auth_retry_interval */
	unsigned refused_run; /* connects refused in a row (retried on the quick pace) */
	double refused_since; /* clock_now() of the run's first */
	bool quiet;	      /* a quick retry after a refusal: its transitions log at debug */
	uint64_t reconnects;
	bool ever_up;
	struct backoff backoff;
	ev_timer timer;	  /* backoff wait, or the connect deadline */
	bool requesting;  /* the link is ready; remote forwards are being requested */
	struct path path; /* the destination's link, through bastions if any */
	struct setup_ticket setup; /* its place among the daemon's set-ups (setup_gate.h) */
	struct forwarder fw;
	struct rtt_estimator rtt; /* keepalive round trips of the current session */
	enum tunnel_health health;
	struct tunnel_job_ops job; /* on_input NULL: none */
	struct status_sidecar sidecar;
	double sidecar_checked; /* clock_now() of the last audit that finished */
	tunnel_changed_fn on_change;
	void *userdata;
};

static bool any_target_down(const struct tunnel *t)
{
	for (size_t i = 0; i < t->fw.n_forwards; i++)
		if (t->fw.stats[i].target_state == TARGET_UNREACHABLE)
			return true;
	return false;
}

static enum tunnel_health decide_health(const struct tunnel *t)
{
	return health_decide(t->health, t->state, &t->rtt, (double)t->cfg->degraded_rtt_ms / 1000.0,
			     any_target_down(t));
}

static void notify_change(struct tunnel *t)
{
	if (t->on_change)
		t->on_change(t, t->userdata);
}

/* Recomputes the health; tells the daemon when it or a target state changed. */
static void health_update(struct tunnel *t, bool targets_changed)
{
	enum tunnel_health h = decide_health(t);

	if (h != t->health) {
		log_msg(h == HEALTH_OK ? LOG_NOTICE : LOG_WARNING, "tunnel %s: health %s -> %s%s",
			t->cfg->name, tunnel_health_str(t->health), tunnel_health_str(h),
			h == HEALTH_DEGRADED ? " (round trip above degraded_rtt)" : "");
		t->health = h;
	} else if (!targets_changed) {
		return;
	}
	notify_change(t);
}

/* The one place state changes: records, logs once, and tells the daemon. */
static void set_state(struct tunnel *t, enum tunnel_event e, const char *reason, uint64_t retry_ms)
{
	enum tunnel_state old = t->state;
	char retry[64] = "";

	if (retry_ms != UINT64_MAX) {
		char d[32];

		duration_format(retry_ms, d, sizeof(d));
		snprintf(retry, sizeof(retry), "; retry in %s", d);
	}
	t->state = tunnel_next_state(old, e);
	t->health = decide_health(t); /* the state line says it: no line of its own */
	t->since = clock_now();
	log_msg(t->quiet ? LOG_DEBUG
			 : (t->state == TUNNEL_UP ? LOG_NOTICE
						  : (old == TUNNEL_UP ? LOG_WARNING : LOG_INFO)),
		"tunnel %s: state %s -> %s%s%s%s", t->cfg->name, tunnel_state_str(old),
		tunnel_state_str(t->state), reason ? ": " : "", reason ? reason : "", retry);
	notify_change(t);
}

static void arm_timer(struct tunnel *t, double seconds)
{
	ev_timer_stop(t->loop, &t->timer);
	ev_timer_set(&t->timer, seconds < 0.001 ? 0.001 : seconds, 0.0);
	ev_timer_start(t->loop, &t->timer);
}

/* Takes the session down: its channels first, then the link. */
static void session_end(struct tunnel *t, bool goodbye)
{
	if (t->job.on_down && t->state == TUNNEL_UP)
		t->job.on_down(t->job.userdata);
	t->requesting = false;
	setup_gate_leave(&t->setup);
	forward_down(&t->fw);
	path_close(&t->path, goodbye);
}

/* A run of refused connects is over: one line says how long it lasted, since its retries
 * after the first were logged at debug. */
static void refused_run_end(struct tunnel *t)
{
	if (t->refused_run > 1)
		log_info("tunnel %s: %u connects refused in a row over %.1fs", t->cfg->name,
			 t->refused_run, clock_now() - t->refused_since);
	t->refused_run = 0;
	t->quiet = false;
}

static enum backoff_cause backoff_cause_of(enum link_failure why)
{
	switch (why) {
	case LINK_FAILURE_REFUSED:
		return BACKOFF_REFUSED;
	case LINK_FAILURE_HUMAN:
		return BACKOFF_HUMAN;
	case LINK_FAILURE_NETWORK:
		break;
	}
	return BACKOFF_NETWORK;
}

static void tunnel_fail(struct tunnel *t, enum link_failure why, const char *reason)
{
	double up_for = t->state == TUNNEL_UP ? clock_now() - t->since : -1;
	bool quick = why == LINK_FAILURE_REFUSED && t->backoff.refusals < BACKOFF_REFUSED_MAX;
	bool same = strcmp(reason, t->last_error) == 0;
	uint64_t delay;

	if (why != LINK_FAILURE_REFUSED)
		refused_run_end(t);
	else if (t->refused_run++ == 0)
		t->refused_since = clock_now();
	/* A sidecar that restarts for a minute would otherwise log 20 lines a second: the
	 * first refusal is logged, then nothing until the run ends (the last line logged
	 * keeps saying backoff and why). */
	t->quiet = quick && t->refused_run > 1 && same;
	snprintf(t->last_error, sizeof(t->last_error), "%s", reason);
	t->auth_failure = why == LINK_FAILURE_HUMAN;
	session_end(t, false);
	forward_attempt_failed(&t->fw);
	delay = backoff_after_failure(&t->backoff, backoff_cause_of(why), up_for, STABLE_AFTER,
				      t->cfg->auth_retry_interval_ms);
	set_state(t, TUNNEL_EVENT_FAIL, reason, delay);
	t->quiet = quick; /* for the retry's backoff -> connecting */
	arm_timer(t, (double)delay / 1000.0);
}

static void tunnel_up(struct tunnel *t)
{
	t->requesting = false;
	refused_run_end(t);
	if (t->ever_up)
		t->reconnects++;
	t->ever_up = true;
	t->last_error[0] = '\0';
	t->auth_failure = false;
	ev_timer_stop(t->loop, &t->timer); /* the connect deadline */
	setup_gate_leave(&t->setup);
	/* A new session: its round trips and its targets are measured afresh. */
	rtt_init(&t->rtt);
	set_state(t, TUNNEL_EVENT_READY, NULL, UINT64_MAX);
	forward_up(&t->fw);
	if (t->job.on_up)
		t->job.on_up(t->job.userdata);
}

static void on_link_ready(void *userdata)
{
	struct tunnel *t = userdata;

	t->requesting = true;
	link_want_pump(path_final(&t->path));
}

static void on_link_fail(void *userdata, enum link_failure why, const char *reason)
{
	tunnel_fail(userdata, why, reason);
}

static int on_link_input(void *userdata)
{
	struct tunnel *t = userdata;
	int rc;

	if (t->requesting) {
		rc = forward_request_remotes(&t->fw);

		if (rc <= 0)
			return rc;
		tunnel_up(t);
	}
	rc = forward_pump(&t->fw);
	if (rc || !t->job.on_input || t->state != TUNNEL_UP)
		return rc;
	return t->job.on_input(t->job.userdata);
}

static void on_link_drained(void *userdata)
{
	struct tunnel *t = userdata;

	forward_resume_clients(&t->fw);
}

static void on_link_rtt(void *userdata, double seconds)
{
	struct tunnel *t = userdata;

	rtt_sample(&t->rtt, seconds);
	health_update(t, false);
}

static size_t on_link_allowance(void *userdata)
{
	struct tunnel *t = userdata;

	return forward_allowance(&t->fw);
}

static bool on_link_drain(void *userdata)
{
	struct tunnel *t = userdata;

	if (forward_drain(&t->fw))
		return true;
	/* the job's channels are read by its on_input in the pump that follows */
	return t->state == TUNNEL_UP && t->job.busy && t->job.busy(t->job.userdata);
}

static void on_target(void *userdata, size_t forward, bool reachable, const char *why)
{
	health_update(userdata, true);
}

/* For the window policy: the session's smallest round trip, its path without queues. */
static double on_forward_rtt(void *userdata)
{
	const struct tunnel *t = userdata;

	return t->rtt.measured ? t->rtt.min : 0;
}

/* How long an unanswered TCP connect waits for a fresh attempt beside it: 3 round trips of
 * the last session's path without queues (through its bastions, if any: more than the first
 * hop's), at least the default. A SYN answered within that time never gets company. */
static uint64_t connect_stagger_ms(const struct tunnel *t)
{
	double rtt_ms = t->rtt.measured ? t->rtt.min * 1000.0 : 0;

	return rtt_ms * 3 > LINK_CONNECT_STAGGER_MS ? (uint64_t)(rtt_ms * 3)
						    : LINK_CONNECT_STAGGER_MS;
}

/* A link's parameters: its host and identity, and what every link of the tunnel takes from
 * its configuration alike. */
static struct link_params link_params_of(const struct tunnel_config *cfg, const char *name,
					 const struct jump_hop *to, const struct identity *identity,
					 const char *identity_file)
{
	return (struct link_params){
	    .name = name,
	    .host = to->host,
	    .port = to->port,
	    .user = to->user,
	    .identity = identity,
	    .identity_file = identity_file,
	    .use_agent = cfg->use_agent,
	    .agent_socket = cfg->agent_socket,
	    .known_hosts_file = cfg->known_hosts_file,
	    .host_key_policy = cfg->strict_host_key_checking,
	    .keepalive_interval_ms = cfg->keepalive_interval_ms,
	    .keepalive_count_max = cfg->keepalive_count_max,
	    .session_memory_max = cfg->session_memory_max,
	};
}

/* Parameters of every link of the path: the bastions first, the destination last.
 * Returns how many. */
static size_t link_params_fill(const struct tunnel *t, struct link_params *p)
{
	const struct tunnel_config *cfg = t->cfg;
	const struct identity *hop_id = t->jump_identity.private_key ? &t->jump_identity
					: cfg->identity_file	     ? &t->identity
								     : NULL;
	const struct jump_hop destination = {
	    .user = cfg->user, .host = cfg->host, .port = cfg->port};
	size_t n = 0;

	for (; n < cfg->n_jump_hops; n++)
		p[n] = link_params_of(cfg, t->hop_names[n], &cfg->jump_hops[n], hop_id,
				      hop_id == &t->jump_identity ? cfg->jump_identity_file
								  : cfg->identity_file);
	p[n] = link_params_of(cfg, t->name, &destination, cfg->identity_file ? &t->identity : NULL,
			      cfg->identity_file);
	p[0].connect_stagger_ms = connect_stagger_ms(t);
	return n + 1;
}

/* The set-up starts: connect_timeout counts from here, not from the wait for a slot. */
static void connect_now(struct tunnel *t)
{
	static const struct link_ops ops_template = {
	    .on_ready = on_link_ready,
	    .on_fail = on_link_fail,
	    .on_input = on_link_input,
	    .on_drained = on_link_drained,
	    .on_rtt = on_link_rtt,
	    .allowance = on_link_allowance,
	    .drain = on_link_drain,
	};
	struct link_ops ops = ops_template;
	struct link_params p[JUMP_HOPS_MAX + 1];
	size_t n;

	arm_timer(t, (double)t->cfg->connect_timeout_ms / 1000.0);
	ops.userdata = t;
	n = link_params_fill(t, p);
	path_open(&t->path, t->loop, p, n, t->cfg->channel_window_max, &ops);
}

static void on_setup_slot(struct setup_ticket *ticket)
{
	connect_now((struct tunnel *)((char *)ticket - offsetof(struct tunnel, setup)));
}

/* Connecting: now, or once the daemon has a set-up slot free (setup_gate.h). */
static void connect_begin(struct tunnel *t, enum tunnel_event e, const char *reason)
{
	if (t->state != TUNNEL_CONNECTING)
		set_state(t, e, reason, UINT64_MAX);
	ev_timer_stop(t->loop, &t->timer);
	setup_gate_leave(&t->setup);
	if (setup_gate_enter(t->loop, &t->setup, on_setup_slot))
		connect_now(t);
	else
		log_debug("tunnel %s: waiting for one of %d set-ups to finish (%u waiting)",
			  t->cfg->name, SETUP_GATE_MAX, setup_gate_waiting());
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct tunnel *t = w->data;
	char d[32], step[200], reason[300];

	switch (t->state) {
	case TUNNEL_BACKOFF:
		connect_begin(t, TUNNEL_EVENT_TIMER, NULL);
		break;
	case TUNNEL_CONNECTING:
		duration_format(t->cfg->connect_timeout_ms, d, sizeof(d));
		if (t->requesting)
			snprintf(step, sizeof(step), "requesting remote forwards");
		else
			path_step_str(&t->path, step, sizeof(step));
		snprintf(reason, sizeof(reason), "connect timeout after %s (during %s)", d, step);
		tunnel_fail(t, LINK_FAILURE_NETWORK, reason);
		break;
	case TUNNEL_UP:
		break;
	}
}

int tunnel_create(struct ev_loop *loop, const struct tunnel_config *cfg, struct identity *identity,
		  const struct listen_ops *listen, tunnel_changed_fn on_change, void *userdata,
		  struct tunnel **ret, char *err, size_t err_size)
{
	struct forward_ops fops = {.on_target = on_target, .rtt = on_forward_rtt};
	struct tunnel *t = calloc(1, sizeof(*t));
	int r;

	if (!t) {
		identity_finish(identity);
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	t->identity = *identity;
	memset(identity, 0, sizeof(*identity));
	t->loop = loop;
	t->cfg = cfg;
	t->on_change = on_change;
	t->userdata = userdata;
	snprintf(t->name, sizeof(t->name), "tunnel %s", cfg->name);
	t->hop_names = calloc(cfg->n_jump_hops ? cfg->n_jump_hops : 1, sizeof(*t->hop_names));
	if (!t->hop_names || path_init(&t->path, cfg->n_jump_hops) < 0) {
		snprintf(err, err_size, "out of memory");
		tunnel_destroy(t);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cfg->n_jump_hops; i++)
		snprintf(t->hop_names[i], sizeof(t->hop_names[i]), "tunnel %s via %s:%u", cfg->name,
			 cfg->jump_hops[i].host, cfg->jump_hops[i].port);
	t->state = TUNNEL_CONNECTING;
	t->since = clock_now();
	ev_timer_init(&t->timer, timer_cb, 1.0, 0.0);
	t->timer.data = t;
	rtt_init(&t->rtt);
	t->health = HEALTH_DOWN;
	backoff_init(&t->backoff, cfg->backoff_initial_ms, cfg->backoff_max_ms,
		     (uint64_t)getpid() * 2654435761u ^ (uint64_t)(uintptr_t)t);
	fops.userdata = t;
	r = identity_load_jump(cfg, &t->jump_identity, err, err_size);
	if (r < 0) {
		tunnel_destroy(t);
		return r;
	}
	r = forward_init(&t->fw, loop, cfg, &t->path.links[cfg->n_jump_hops], listen, &fops, err,
			 err_size);
	if (r < 0) {
		tunnel_destroy(t);
		return r;
	}
	*ret = t;
	return 0;
}

void tunnel_start(struct tunnel *t)
{
	char via[JUMP_HOPS_MAX * 300] = "";
	size_t used = 0;

	forward_start(&t->fw);
	/* the hops as status shows them: user@host:port, in order */
	for (size_t i = 0; i < t->cfg->n_jump_hops && used + 2 < sizeof(via); i++) {
		if (i > 0)
			used += (size_t)snprintf(via + used, sizeof(via) - used, ",");
		jumpspec_format_hop(&t->cfg->jump_hops[i], via + used, sizeof(via) - used);
		used += strlen(via + used);
	}
	log_info("tunnel %s: connecting to %s@%s:%u%s%s", t->cfg->name, t->cfg->user, t->cfg->host,
		 t->cfg->port, used ? " via " : "", via);
	connect_begin(t, TUNNEL_EVENT_START, NULL);
}

void tunnel_reconnect(struct tunnel *t, const char *why)
{
	session_end(t, true);
	backoff_reset(&t->backoff);
	refused_run_end(t);
	if (t->state == TUNNEL_CONNECTING)
		log_info("tunnel %s: connecting again: %s", t->cfg->name, why);
	connect_begin(t, TUNNEL_EVENT_RECONNECT, why);
}

void tunnel_destroy(struct tunnel *t)
{
	if (!t)
		return;
	if (t->job.on_destroy) {
		struct tunnel_job_ops job = t->job;

		memset(&t->job, 0, sizeof(t->job));
		job.on_destroy(job.userdata);
	}
	ev_timer_stop(t->loop, &t->timer);
	session_end(t, true);
	forward_finish(&t->fw);
	identity_finish(&t->identity);
	identity_finish(&t->jump_identity);
	path_finish(&t->path);
	free(t->hop_names);
	free(t);
}

const struct tunnel_config *tunnel_config(const struct tunnel *t)
{
	return t->cfg;
}

void tunnel_set_config(struct tunnel *t, const struct tunnel_config *cfg)
{
	t->cfg = cfg;
	forward_set_config(&t->fw, cfg);
	/* the links keep pointers to the strings of the configuration */
	{
		struct link_params p[JUMP_HOPS_MAX + 1];
		size_t n = link_params_fill(t, p);

		path_set_params(&t->path, p, n);
	}
}

void tunnel_set_window_budget(uint64_t bytes)
{
	window_budget_set_limit(bytes);
}

int tunnel_snapshot(const struct tunnel *t, struct status_tunnel *out)
{
	const struct tunnel_config *cfg = t->cfg;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", cfg->name);
	out->state = t->state;
	out->health = t->health;
	out->rtt_measured = t->rtt.measured;
	out->rtt = t->rtt.srtt;
	out->rtt_last = t->rtt.last;
	out->since = clock_to_wall(t->since);
	snprintf(out->host, sizeof(out->host), "%s", cfg->host);
	out->port = cfg->port;
	snprintf(out->user, sizeof(out->user), "%s", cfg->user);
	status_tunnel_set_via(out, cfg->jump_hops, cfg->n_jump_hops);
	out->reconnects = t->reconnects;
	snprintf(out->last_error, sizeof(out->last_error), "%s", t->last_error);
	out->auth_failure = t->auth_failure;
	out->sidecar = t->sidecar;
	if (t->sidecar.checked)
		out->sidecar.checked_at = clock_to_wall(t->sidecar_checked);
	out->forwards = calloc(t->fw.n_forwards ? t->fw.n_forwards : 1, sizeof(*out->forwards));
	if (!out->forwards)
		return -ENOMEM;
	out->n_forwards = t->fw.n_forwards;
	for (size_t i = 0; i < t->fw.n_forwards; i++) {
		struct status_forward *sf = &out->forwards[i];
		const struct forward_stats *st = &t->fw.stats[i];

		sf->kind = cfg->forwards[i].kind;
		fwdspec_format_listen(&cfg->forwards[i], sf->listen, sizeof(sf->listen));
		fwdspec_format_target(&cfg->forwards[i], sf->target, sizeof(sf->target));
		sf->active = st->active;
		sf->connections_total = st->connections_total;
		sf->bytes_in = st->bytes_in;
		sf->bytes_out = st->bytes_out;
		sf->open_failures = st->open_failures;
		memcpy(sf->rejected, st->rejected, sizeof(sf->rejected));
		sf->target_state = st->target_state;
		snprintf(sf->target_error, sizeof(sf->target_error), "%s", st->target_error);
		sf->probe_rtt_measured = st->probe_rtt_measured;
		sf->probe_rtt = st->probe_rtt;
		sf->probe_failures = st->probe_failures;
		forward_windows(&t->fw, i, &sf->window_largest, &sf->window_total);
	}
	return 0;
}

void tunnel_set_job(struct tunnel *t, const struct tunnel_job_ops *ops)
{
	t->job = *ops;
	if (t->state == TUNNEL_UP && t->job.on_up)
		t->job.on_up(t->job.userdata);
}

LIBSSH2_SESSION *tunnel_session(struct tunnel *t)
{
	return t->state == TUNNEL_UP ? path_final(&t->path)->session : NULL;
}

int tunnel_channel_open(struct tunnel *t, LIBSSH2_CHANNEL **ret, const char *type,
			unsigned type_len, unsigned window, unsigned packet, const char *msg,
			unsigned msg_len)
{
	return link_channel_open_as(path_final(&t->path), &t->job, ret, type, type_len, window,
				    packet, msg, msg_len);
}

bool tunnel_global_request_begin(struct tunnel *t)
{
	return link_global_request_begin(path_final(&t->path));
}

void tunnel_global_request_end(struct tunnel *t)
{
	link_global_request_end(path_final(&t->path));
}

void tunnel_want_pump(struct tunnel *t)
{
	if (t->state == TUNNEL_UP)
		link_want_pump(path_final(&t->path));
}

void tunnel_set_sidecar(struct tunnel *t, const struct status_sidecar *s)
{
	t->sidecar = *s;
	if (s->checked)
		t->sidecar_checked = clock_now();
	t->sidecar.checked = s->checked || t->sidecar_checked > 0;
	notify_change(t);
}
