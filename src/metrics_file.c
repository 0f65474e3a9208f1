#include "metrics_file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "clock.h"
#include "log.h"
#include "status_format.h"

struct metrics_file {
	struct ev_loop *loop;
	char *path;
	uint64_t interval_ms;
	metrics_file_snapshot_fn snapshot;
	metrics_file_stale_fn on_stale;
	void *userdata;
	ev_timer timer;
	int last_error;		/* of the last write: 0 after a success */
	double last_logged;	/* clock_now() of a failure */
	uint64_t failures;	/* since the last one logged */
	uint64_t failed_writes; /* in a row, since the last success */
	bool stale;		/* failed_writes reached METRICS_FILE_STALE_WRITES */
};

void metrics_mark_stopped(struct status *s, struct timespec now)
{
	for (size_t i = 0; i < s->n_tunnels; i++) {
		struct status_tunnel *t = &s->tunnels[i];

		if (t->state == TUNNEL_UP)
			t->state = TUNNEL_BACKOFF;
		t->since = now;
		t->health = HEALTH_DOWN;
		t->rtt_measured = false;
		for (size_t j = 0; j < t->n_forwards; j++)
			t->forwards[j].target_state = TARGET_UNKNOWN;
	}
}

/*
 * Counts failed writes in a row: the file turns stale at METRICS_FILE_STALE_WRITES, and
 * fresh at the next success; `notify` tells the daemon (not at shutdown).
 */
static void note_staleness(struct metrics_file *m, int r, bool notify)
{
	double for_seconds = (double)m->failed_writes * (double)m->interval_ms / 1000.0;
	char reason[512];

	if (r == 0) {
		if (m->stale && notify && m->on_stale) {
			snprintf(reason, sizeof(reason), "metrics_textfile %s not written: %s",
				 m->path, strerror(-m->last_error));
			m->on_stale(m->userdata, false, reason, for_seconds);
		}
		m->stale = false;
		m->failed_writes = 0;
		return;
	}
	m->failed_writes++;
	for_seconds = (double)m->failed_writes * (double)m->interval_ms / 1000.0;
	if (m->stale || m->failed_writes < METRICS_FILE_STALE_WRITES)
		return;
	m->stale = true;
	snprintf(reason, sizeof(reason), "metrics_textfile %s not written: %s", m->path,
		 strerror(-r));
	log_err("metrics_textfile %s: not written for %.3gs (%llu writes in a row failed): %s; "
		"node_exporter serves the file written before",
		m->path, for_seconds, (unsigned long long)m->failed_writes, strerror(-r));
	if (notify && m->on_stale)
		m->on_stale(m->userdata, true, reason, for_seconds);
}

/* Logs the first failure, a different one, and then one every METRICS_FILE_LOG_EVERY_S. */
static void note_result(struct metrics_file *m, int r, bool notify)
{
	double now = clock_now();

	note_staleness(m, r, notify);
	if (r == 0) {
		if (m->last_error)
			log_notice("metrics_textfile %s: written again", m->path);
		m->last_error = 0;
		m->failures = 0;
		return;
	}
	m->failures++;
	if (r != m->last_error || now - m->last_logged >= METRICS_FILE_LOG_EVERY_S) {
		if (m->failures > 1)
			log_warn("metrics_textfile %s: %s (%llu failed writes; trying again every "
				 "metrics_interval)",
				 m->path, strerror(-r), (unsigned long long)m->failures);
		else
			log_warn("metrics_textfile %s: %s (trying again every metrics_interval)",
				 m->path, strerror(-r));
		m->last_logged = now;
		m->failures = 0;
	}
	m->last_error = r;
}

static int render_and_replace(struct metrics_file *m, bool stopped)
{
	struct status s;
	char *text = NULL;
	size_t len = 0;
	FILE *out;
	int r;

	r = m->snapshot(m->userdata, &s);
	if (r < 0)
		return r;
	if (stopped)
		metrics_mark_stopped(&s, clock_wall());
	out = open_memstream(&text, &len);
	if (!out) {
		status_free(&s);
		return -ENOMEM;
	}
	r = status_format_metrics(&s, out);
	status_free(&s);
	if (fclose(out) != 0 && r == 0)
		r = -ENOMEM;
	if (r == 0)
		r = atomicfile_replace(m->path, text, len, 0644);
	free(text);
	return r;
}

int metrics_file_write(struct metrics_file *m)
{
	int r = render_and_replace(m, false);

	note_result(m, r, true);
	return r;
}

int metrics_file_write_stopped(struct metrics_file *m)
{
	int r = render_and_replace(m, true);

	note_result(m, r, false);
	return r;
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	metrics_file_write(w->data);
}

int metrics_file_create(struct ev_loop *loop, const char *path, uint64_t interval_ms,
			metrics_file_snapshot_fn snapshot, metrics_file_stale_fn on_stale,
			void *userdata, struct metrics_file **ret)
{
	struct metrics_file *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->path = strdup(path);
	if (!m->path) {
		metrics_file_destroy(m);
		return -ENOMEM;
	}
	m->loop = loop;
	m->interval_ms = interval_ms;
	m->snapshot = snapshot;
	m->on_stale = on_stale;
	m->userdata = userdata;
	ev_timer_init(&m->timer, on_timer, 0., (ev_tstamp)interval_ms / 1000.0);
	m->timer.data = m;
	ev_timer_start(loop, &m->timer);
	*ret = m;
	return 0;
}

void metrics_file_destroy(struct metrics_file *m)
{
	if (!m)
		return;
	if (m->loop)
		ev_timer_stop(m->loop, &m->timer);
	free(m->path);
	free(m);
}

const char *metrics_file_path(const struct metrics_file *m)
{
	return m->path;
}

uint64_t metrics_file_interval(const struct metrics_file *m)
{
	return m->interval_ms;
}

bool metrics_file_stale(const struct metrics_file *m)
{
	return m->stale;
}

int metrics_file_last_error(const struct metrics_file *m)
{
	return m->last_error;
}
