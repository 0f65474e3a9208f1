#include "status_format.h"
#include "textenc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

/* C0 controls, DEL, and C1 controls (U+0080..U+009F, which some terminals obey). */
static bool is_control(const unsigned char *p, size_t len)
{
	if (len == 1)
		return p[0] < 0x20 || p[0] == 0x7f;
	return len == 2 && p[0] == 0xc2 && p[1] < 0xa0;
}

/*
 * Copies at most `max` bytes (or up to NUL) of s into buf as valid UTF-8 with control
 * characters replaced by `replacement`, never cutting a character in half. Returns the
 * width in code points.
 */
static size_t sanitize_text(const char *s, size_t max, char replacement, char *buf, size_t size)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strnlen(s, max), used = 0, width = 0;

	if (size == 0)
		return 0;
	for (size_t i = 0; i < n;) {
		size_t len = utf8_sequence_len(p + i, n - i);
		const char *piece = (const char *)p + i;
		size_t piece_len = len;

		if (len == 0) {
			piece = REPLACEMENT_CHARACTER;
			piece_len = strlen(REPLACEMENT_CHARACTER);
			len = 1;
		} else if (is_control(p + i, len)) {
			piece = &replacement;
			piece_len = 1;
		}
		if (used + piece_len >= size)
			break;
		memcpy(buf + used, piece, piece_len);
		used += piece_len;
		width++;
		i += len;
	}
	buf[used] = '\0';
	return width;
}

static void put_json_string(FILE *out, const char *s, size_t max)
{
	fputc('"', out);
	text_put_escaped(out, s, max, TEXT_ESCAPE_JSON);
	fputc('"', out);
}

static void format_rfc3339(time_t t, char *buf, size_t size)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "1970-01-01T00:00:00Z");
}

static const char *forward_kind_str(enum forward_kind k)
{
	return k == FORWARD_REMOTE ? "remote" : "local";
}

static int stream_result(FILE *out)
{
	return ferror(out) ? -EIO : 0;
}

size_t status_count_up(const struct status *s)
{
	size_t up = 0;

	for (size_t i = 0; i < s->n_tunnels; i++)
		if (s->tunnels[i].state == TUNNEL_UP)
			up++;
	return up;
}

size_t status_count_healthy(const struct status *s)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_tunnels; i++)
		n += s->tunnels[i].state == TUNNEL_UP && s->tunnels[i].health == HEALTH_OK;
	return n;
}

static uint64_t forward_rejected_total(const struct status_forward *f)
{
	uint64_t total = 0;

	for (size_t r = 0; r < N_REJECT_REASONS; r++)
		total += f->rejected[r];
	return total;
}

/* Milliseconds with 0.1 ms resolution, or null when not measured. */
static void put_json_ms(FILE *out, bool measured, double seconds)
{
	if (measured)
		fprintf(out, "%.1f", seconds * 1000.0);
	else
		fputs("null", out);
}

static void put_json_forward(FILE *out, const struct status_forward *f)
{
	fprintf(out, "{\"type\":\"%s\",\"listen\":", forward_kind_str(f->kind));
	put_json_string(out, f->listen, sizeof(f->listen));
	fputs(",\"target\":", out);
	put_json_string(out, f->target, sizeof(f->target));
	fprintf(out,
		",\"active\":%" PRIu64 ",\"connections_total\":%" PRIu64 ",\"bytes_in\":%" PRIu64
		",\"bytes_out\":%" PRIu64 ",\"open_failures\":%" PRIu64 ",\"rejected\":%" PRIu64
		",\"rejected_by_reason\":{",
		f->active, f->connections_total, f->bytes_in, f->bytes_out, f->open_failures,
		forward_rejected_total(f));
	for (size_t r = 0; r < N_REJECT_REASONS; r++)
		fprintf(out, "%s\"%s\":%" PRIu64, r > 0 ? "," : "", reject_reason_str(r),
			f->rejected[r]);
	fprintf(out,
		"},\"target_state\":\"%s\",\"target_error\":", target_state_str(f->target_state));
	if (f->target_error[0])
		put_json_string(out, f->target_error, sizeof(f->target_error));
	else
		fputs("null", out);
	fputs(",\"probe_rtt_ms\":", out);
	put_json_ms(out, f->probe_rtt_measured, f->probe_rtt);
	fprintf(out,
		",\"probe_failures\":%" PRIu64 ",\"window_largest_bytes\":%" PRIu64
		",\"window_total_bytes\":%" PRIu64 "}",
		f->probe_failures, f->window_largest, f->window_total);
}

/* "sidecar", the failed checks, when the last audit finished and why none did. */
static void put_json_sidecar(FILE *out, const struct status_sidecar *sc)
{
	char when[32];

	fprintf(out, ",\"sidecar\":\"%s\",\"sidecar_failed\":[", sidecar_state_str(sc->state));
	for (size_t i = 0; i < sc->n_failed && i < SIDECAR_FAILED_MAX; i++) {
		if (i > 0)
			fputc(',', out);
		put_json_string(out, sc->failed[i], sizeof(sc->failed[i]));
	}
	fprintf(out, "],\"sidecar_failed_count\":%zu,\"sidecar_checked\":", sc->n_failed);
	if (sc->checked) {
		format_rfc3339(sc->checked_at.tv_sec, when, sizeof(when));
		fprintf(out, "\"%s\"", when);
	} else {
		fputs("null", out);
	}
	fputs(",\"sidecar_error\":", out);
	if (sc->error[0])
		put_json_string(out, sc->error, sizeof(sc->error));
	else
		fputs("null", out);
}

static void put_json_tunnel(FILE *out, const struct status_tunnel *t)
{
	char since[32];

	format_rfc3339(t->since.tv_sec, since, sizeof(since));
	fputs("{\"name\":", out);
	put_json_string(out, t->name, sizeof(t->name));
	fprintf(out, ",\"state\":\"%s\",\"health\":\"%s\",\"rtt_ms\":", tunnel_state_str(t->state),
		tunnel_health_str(t->health));
	put_json_ms(out, t->rtt_measured, t->rtt);
	fputs(",\"rtt_last_ms\":", out);
	put_json_ms(out, t->rtt_measured, t->rtt_last);
	fprintf(out, ",\"since\":\"%s\",\"host\":", since);
	put_json_string(out, t->host, sizeof(t->host));
	fprintf(out, ",\"port\":%u,\"user\":", (unsigned)t->port);
	put_json_string(out, t->user, sizeof(t->user));
	fputs(",\"via\":[", out);
	for (size_t i = 0; i < t->n_via && i < JUMP_HOPS_MAX; i++) {
		if (i > 0)
			fputc(',', out);
		put_json_string(out, t->via[i], sizeof(t->via[i]));
	}
	fputc(']', out);
	fprintf(out, ",\"reconnects\":%" PRIu64 ",\"last_error\":", t->reconnects);
	if (t->last_error[0])
		put_json_string(out, t->last_error, sizeof(t->last_error));
	else
		fputs("null", out);
	put_json_sidecar(out, &t->sidecar);
	fputs(",\"forwards\":[", out);
	for (size_t i = 0; i < t->n_forwards; i++) {
		if (i > 0)
			fputc(',', out);
		put_json_forward(out, &t->forwards[i]);
	}
	fputs("]}", out);
}

int status_format_json(const struct status *s, FILE *out)
{
	fputs("{\"tunnels\":[", out);
	for (size_t i = 0; i < s->n_tunnels; i++) {
		if (i > 0)
			fputc(',', out);
		put_json_tunnel(out, &s->tunnels[i]);
	}
	fprintf(out, "],\"daemon\":{\"pid\":%ld,\"nofile_limit\":%" PRIu64, (long)s->daemon.pid,
		s->daemon.nofile_limit);
	fputs(",\"metrics_textfile_stale\":", out);
	if (s->daemon.metrics_textfile)
		fputs(s->daemon.metrics_textfile_stale ? "true" : "false", out);
	else
		fputs("null", out);
	fputs(",\"metrics_textfile_error\":", out);
	if (s->daemon.metrics_textfile && s->daemon.metrics_textfile_error[0])
		put_json_string(out, s->daemon.metrics_textfile_error,
				sizeof(s->daemon.metrics_textfile_error));
	else
		fputs("null", out);
	fprintf(out, "},\"memory\":{\"limit_bytes\":%" PRIu64 ",\"used_bytes\":%" PRIu64
		",\"peak_bytes\":%" PRIu64 ",\"stage\":\"%s\",\"by_kind\":{",
		s->memory.limit, s->memory.used, s->memory.peak,
		memacct_stage_str(s->memory.stage));
	for (int k = 0; k < MEMACCT_KINDS; k++)
		fprintf(out, "%s\"%s\":%" PRIu64, k > 0 ? "," : "", memacct_kind_str(k),
			s->memory.by_kind[k]);
	fputs("}}}\n", out);
	return stream_result(out);
}

void status_format_age(uint64_t seconds, char *buf, size_t size)
{
	if (seconds < 60)
		snprintf(buf, size, "%" PRIu64 "s", seconds);
	else if (seconds < 3600)
		snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", seconds / 60, seconds % 60);
	else if (seconds < 86400)
		snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", seconds / 3600,
			 seconds % 3600 / 60);
	else
		snprintf(buf, size, "%" PRIu64 "d%02" PRIu64 "h", seconds / 86400,
			 seconds % 86400 / 3600);
}

/* One table cell: sanitized text and its width in code points. */
struct cell {
	char text[600];
	size_t width;
};

enum table_column {
	COLUMN_TUNNEL,
	COLUMN_STATE,
	COLUMN_HEALTH,
	COLUMN_SIDECAR,
	COLUMN_RTT,
	COLUMN_SINCE,
	COLUMN_ENDPOINT,
	COLUMN_RECONNECTS,
	COLUMN_LAST_ERROR,
	N_COLUMNS,
};

static const char *const table_headers[N_COLUMNS] = {
    "TUNNEL", "STATE", "HEALTH", "SIDECAR", "RTT", "SINCE", "ENDPOINT", "RECONNECTS", "LAST ERROR",
};

static void cell_set(struct cell *c, const char *text, size_t max)
{
	c->width = sanitize_text(text, max, '?', c->text, sizeof(c->text));
}

static void table_row_fill(struct cell row[N_COLUMNS], const struct status_tunnel *t, time_t now)
{
	char buf[sizeof(t->user) + sizeof(t->host) + 16 + sizeof(t->via)];
	char host[sizeof(t->host)];
	size_t used;
	bool bracket;

	cell_set(&row[COLUMN_TUNNEL], t->name, sizeof(t->name));
	cell_set(&row[COLUMN_STATE], tunnel_state_str(t->state), SIZE_MAX);
	cell_set(&row[COLUMN_HEALTH], tunnel_health_str(t->health), SIZE_MAX);
	cell_set(&row[COLUMN_SIDECAR], sidecar_state_str(t->sidecar.state), SIZE_MAX);
	/* a tunnel that is not up has no round trip now: its last one would mislead */
	if (t->rtt_measured && t->state == TUNNEL_UP)
		snprintf(buf, sizeof(buf), t->rtt < 0.01 ? "%.1fms" : "%.0fms", t->rtt * 1000.0);
	else
		snprintf(buf, sizeof(buf), "-");
	cell_set(&row[COLUMN_RTT], buf, sizeof(buf));
	if (t->since.tv_sec <= 0)
		snprintf(buf, sizeof(buf), "-");
	else
		status_format_age(now > t->since.tv_sec ? (uint64_t)(now - t->since.tv_sec) : 0,
				  buf, sizeof(buf));
	cell_set(&row[COLUMN_SINCE], buf, sizeof(buf));
	snprintf(host, sizeof(host), "%.*s", (int)sizeof(t->host) - 1, t->host);
	bracket = strchr(host, ':') != NULL; /* IPv6 literal */
	snprintf(buf, sizeof(buf), "%.*s@%s%s%s:%u", (int)sizeof(t->user) - 1, t->user,
		 bracket ? "[" : "", host, bracket ? "]" : "", (unsigned)t->port);
	/* the path the session takes: "deploy@db:22 via ops@bastion:22,deploy@edge:22" */
	used = strlen(buf);
	for (size_t i = 0; i < t->n_via && i < JUMP_HOPS_MAX; i++) {
		snprintf(buf + used, sizeof(buf) - used, "%s%.*s", i ? "," : " via ",
			 (int)sizeof(t->via[i]) - 1, t->via[i]);
		used += strlen(buf + used);
	}
	cell_set(&row[COLUMN_ENDPOINT], buf, sizeof(buf));
	snprintf(buf, sizeof(buf), "%" PRIu64, t->reconnects);
	cell_set(&row[COLUMN_RECONNECTS], buf, sizeof(buf));
	if (t->last_error[0])
		cell_set(&row[COLUMN_LAST_ERROR], t->last_error, sizeof(t->last_error));
	else
		cell_set(&row[COLUMN_LAST_ERROR], "-", 1);
}

static void put_cell(FILE *out, const struct cell *c, size_t width, bool last)
{
	fputs(c->text, out);
	if (last)
		return;
	for (size_t i = c->width; i < width + 2; i++)
		fputc(' ', out);
}

static void put_forward_line(FILE *out, const struct status_forward *f, size_t listen_width)
{
	struct cell listen, target;

	cell_set(&listen, f->listen, sizeof(f->listen));
	cell_set(&target, f->target, sizeof(f->target));
	fprintf(out, "  %-6s  ", forward_kind_str(f->kind));
	put_cell(out, &listen, listen_width, false);
	fprintf(out, "-> %s  %" PRIu64 " active", target.text, f->active);
	if (forward_rejected_total(f) > 0)
		fprintf(out, ", %" PRIu64 " rejected", forward_rejected_total(f));
	if (f->target_state == TARGET_UNREACHABLE) {
		struct cell why;

		cell_set(&why, f->target_error[0] ? f->target_error : "no answer",
			 sizeof(f->target_error));
		fprintf(out, ", target unreachable (%s)", why.text);
	}
	fputc('\n', out);
}

/* node_exporter serves an old file: said under the table. */
static void put_metrics_textfile_line(FILE *out, const struct status_daemon *d)
{
	struct cell why;

	if (!d->metrics_textfile || !d->metrics_textfile_stale)
		return;
	cell_set(&why, d->metrics_textfile_error[0] ? d->metrics_textfile_error : "unknown error",
		 sizeof(d->metrics_textfile_error));
	fprintf(out, "metrics_textfile stale (%s): node_exporter serves an old file\n", why.text);
}

int status_format_table(const struct status *s, time_t now, FILE *out)
{
	size_t width[N_COLUMNS], listen_width = 0;
	struct cell row[N_COLUMNS];

	if (s->n_tunnels == 0) {
		fputs("no tunnels configured\n", out);
		put_metrics_textfile_line(out, &s->daemon);
		return stream_result(out);
	}
	for (size_t c = 0; c < N_COLUMNS; c++)
		width[c] = strlen(table_headers[c]);
	for (size_t i = 0; i < s->n_tunnels; i++) {
		const struct status_tunnel *t = &s->tunnels[i];

		table_row_fill(row, t, now);
		for (size_t c = 0; c < N_COLUMNS; c++)
			if (row[c].width > width[c])
				width[c] = row[c].width;
		for (size_t j = 0; j < t->n_forwards; j++) {
			struct cell listen;

			cell_set(&listen, t->forwards[j].listen, sizeof(t->forwards[j].listen));
			if (listen.width > listen_width)
				listen_width = listen.width;
		}
	}
	for (size_t c = 0; c < N_COLUMNS; c++) {
		struct cell h;

		cell_set(&h, table_headers[c], SIZE_MAX);
		put_cell(out, &h, width[c], c == N_COLUMNS - 1);
	}
	fputc('\n', out);
	for (size_t i = 0; i < s->n_tunnels; i++) {
		const struct status_tunnel *t = &s->tunnels[i];

		table_row_fill(row, t, now);
		for (size_t c = 0; c < N_COLUMNS; c++)
			put_cell(out, &row[c], width[c], c == N_COLUMNS - 1);
		fputc('\n', out);
		for (size_t j = 0; j < t->n_forwards; j++)
			put_forward_line(out, &t->forwards[j], listen_width);
	}
	put_metrics_textfile_line(out, &s->daemon);
	if (s->memory.stage != MEMACCT_OK)
		fprintf(out, "memory: %.1f of %.1f MiB, %s\n", (double)s->memory.used / (1 << 20),
			(double)s->memory.limit / (1 << 20), memacct_stage_str(s->memory.stage));
	return stream_result(out);
}

static void put_metric_family(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_label(FILE *out, const char *name, const char *value, size_t max, bool first)
{
	fprintf(out, "%s%s=\"", first ? "" : ",", name);
	text_put_escaped(out, value, max, TEXT_ESCAPE_LABEL);
	fputc('"', out);
}

static void put_tunnel_sample(FILE *out, const char *name, const struct status_tunnel *t,
			      uint64_t value)
{
	fprintf(out, "%s{", name);
	put_label(out, "tunnel", t->name, sizeof(t->name), true);
	fprintf(out, "} %" PRIu64 "\n", value);
}

/* `label` is NULL, or a family's own label after the forward's ("direction", "reason"). */
static void put_forward_sample(FILE *out, const char *name, const struct status_tunnel *t,
			       const struct status_forward *f, const char *label,
			       const char *label_value, uint64_t value)
{
	fprintf(out, "%s{", name);
	put_label(out, "tunnel", t->name, sizeof(t->name), true);
	put_label(out, "type", forward_kind_str(f->kind), SIZE_MAX, false);
	put_label(out, "forward", f->listen, sizeof(f->listen), false);
	if (label)
		put_label(out, label, label_value, SIZE_MAX, false);
	fprintf(out, "} %" PRIu64 "\n", value);
}

enum tunnel_metric {
	TUNNEL_METRIC_UP,
	TUNNEL_METRIC_RECONNECTS,
	TUNNEL_METRIC_SINCE,
};

static const struct {
	const char *name, *type, *help;
} tunnel_metrics[] = {
    [TUNNEL_METRIC_UP] = {"moletun_tunnel_up", "gauge",
			  "Whether the tunnel's SSH session is established (1) or not (0)."},
    [TUNNEL_METRIC_RECONNECTS] = {"moletun_tunnel_reconnects_total", "counter",
				  "SSH sessions re-established after the first one."},
    [TUNNEL_METRIC_SINCE] = {"moletun_tunnel_state_since_seconds", "gauge",
			     "Unix time of the tunnel's last state change."},
};

static uint64_t tunnel_metric_value(enum tunnel_metric m, const struct status_tunnel *t)
{
	switch (m) {
	case TUNNEL_METRIC_UP:
		return t->state == TUNNEL_UP;
	case TUNNEL_METRIC_RECONNECTS:
		return t->reconnects;
	case TUNNEL_METRIC_SINCE:
		return t->since.tv_sec > 0 ? (uint64_t)t->since.tv_sec : 0;
	}
	return 0;
}

enum forward_metric {
	FORWARD_METRIC_ACTIVE,
	FORWARD_METRIC_CONNECTIONS,
	FORWARD_METRIC_BYTES,
	FORWARD_METRIC_OPEN_FAILURES,
	FORWARD_METRIC_REJECTED,
	FORWARD_METRIC_WINDOW,
};

static const struct {
	const char *name, *type, *help;
} forward_metrics[] = {
    [FORWARD_METRIC_ACTIVE] = {"moletun_forward_active_connections", "gauge",
			       "Connections currently open through the forward."},
    [FORWARD_METRIC_CONNECTIONS] = {"moletun_forward_connections_total", "counter",
				    "Connections accepted by the forward."},
    [FORWARD_METRIC_BYTES] = {"moletun_forward_bytes_total", "counter",
			      "Bytes carried by the forward; direction=\"in\" towards the "
			      "connecting client, \"out\" towards the SSH peer."},
    [FORWARD_METRIC_OPEN_FAILURES] = {"moletun_forward_open_failures_total", "counter",
				      "SSH channels the forward failed to open."},
    [FORWARD_METRIC_REJECTED] =
	{"moletun_forward_rejected_total", "counter",
	 "Clients the forward closed without serving them; "
	 "reason=\"max_connections\" when it was full, \"down\" when the "
	 "tunnel was not up (at once, or when down_hold ran out), \"memory\" "
	 "when the daemon's memory account had no room for it."},
    [FORWARD_METRIC_WINDOW] = {"moletun_forward_window_bytes", "gauge",
			       "Receive windows of the forward's open channels: "
			       "stat=\"largest\" the largest one, \"total\" their sum."},
};

static void put_forward_family(FILE *out, enum forward_metric m, const struct status *s)
{
	const char *name = forward_metrics[m].name;

	put_metric_family(out, name, forward_metrics[m].type, forward_metrics[m].help);
	for (size_t i = 0; i < s->n_tunnels; i++) {
		const struct status_tunnel *t = &s->tunnels[i];

		for (size_t j = 0; j < t->n_forwards; j++) {
			const struct status_forward *f = &t->forwards[j];

			switch (m) {
			case FORWARD_METRIC_ACTIVE:
				put_forward_sample(out, name, t, f, NULL, NULL, f->active);
				break;
			case FORWARD_METRIC_CONNECTIONS:
				put_forward_sample(out, name, t, f, NULL, NULL,
						   f->connections_total);
				break;
			case FORWARD_METRIC_BYTES:
				put_forward_sample(out, name, t, f, "direction", "in", f->bytes_in);
				put_forward_sample(out, name, t, f, "direction", "out",
						   f->bytes_out);
				break;
			case FORWARD_METRIC_OPEN_FAILURES:
				put_forward_sample(out, name, t, f, NULL, NULL, f->open_failures);
				break;
			case FORWARD_METRIC_REJECTED:
				for (size_t r = 0; r < N_REJECT_REASONS; r++)
					put_forward_sample(out, name, t, f, "reason",
							   reject_reason_str(r), f->rejected[r]);
				break;
			case FORWARD_METRIC_WINDOW:
				put_forward_sample(out, name, t, f, "stat", "largest",
						   f->window_largest);
				put_forward_sample(out, name, t, f, "stat", "total",
						   f->window_total);
				break;
			}
		}
	}
}

/* Health: RTT (measured tunnels only), health as a state set, targets of local forwards. */
static void put_memory_families(FILE *out, const struct status_memory *m)
{
	put_metric_family(out, "moletun_memory_limit_bytes", "gauge",
			  "The daemon's memory account's limit (memory_limit).");
	fprintf(out, "moletun_memory_limit_bytes %" PRIu64 "\n", m->limit);
	put_metric_family(out, "moletun_memory_used_bytes", "gauge",
			  "What the memory account counts now, by kind: session (libssh2), "
			  "window (granted, not used by the server yet), buffer (moletun's), "
			  "socket (client sockets' kernel queues at their bounds).");
	for (int k = 0; k < MEMACCT_KINDS; k++) {
		fputs("moletun_memory_used_bytes{", out);
		put_label(out, "kind", memacct_kind_str(k), SIZE_MAX, true);
		fprintf(out, "} %" PRIu64 "\n", m->by_kind[k]);
	}
	put_metric_family(out, "moletun_memory_peak_bytes", "gauge",
			  "The most the memory account counted since the daemon started.");
	fprintf(out, "moletun_memory_peak_bytes %" PRIu64 "\n", m->peak);
	put_metric_family(out, "moletun_memory_stage", "gauge",
			  "1 for the memory account's current stage (ok, no_growth, shed, "
			  "refuse_fat, full), 0 for the others.");
	for (int st = MEMACCT_OK; st <= MEMACCT_FULL; st++) {
		fputs("moletun_memory_stage{", out);
		put_label(out, "stage", memacct_stage_str(st), SIZE_MAX, true);
		fprintf(out, "} %d\n", m->stage == (enum memacct_stage)st);
	}
}

static void put_health_families(FILE *out, const struct status *s)
{
	put_metric_family(out, "moletun_tunnel_rtt_seconds", "gauge",
			  "Smoothed round-trip time of the tunnel's SSH keepalives (RFC 6298 "
			  "SRTT); absent until measured.");
	for (size_t i = 0; i < s->n_tunnels; i++) {
		const struct status_tunnel *t = &s->tunnels[i];

		if (!t->rtt_measured)
			continue;
		fputs("moletun_tunnel_rtt_seconds{", out);
		put_label(out, "tunnel", t->name, sizeof(t->name), true);
		fprintf(out, "} %.6f\n", t->rtt);
	}
	put_metric_family(out, "moletun_tunnel_health", "gauge",
			  "1 for the tunnel's current health (ok, degraded, target_down, down), "
			  "0 for the others.");
	for (size_t i = 0; i < s->n_tunnels; i++) {
		const struct status_tunnel *t = &s->tunnels[i];

		for (int h = HEALTH_OK; h <= HEALTH_DOWN; h++) {
			fputs("moletun_tunnel_health{", out);
			put_label(out, "tunnel", t->name, sizeof(t->name), true);
			put_label(out, "health", tunnel_health_str(h), SIZE_MAX, false);
			fprintf(out, "} %d\n", t->health == (enum tunnel_health)h);
		}
	}
	put_metric_family(out, "moletun_forward_target_up", "gauge",
			  "Whether a local forward's target answered the last probe or client "
			  "(1) or not (0); absent while unknown.");
	for (size_t i = 0; i < s->n_tunnels; i++)
		for (size_t j = 0; j < s->tunnels[i].n_forwards; j++) {
			const struct status_forward *f = &s->tunnels[i].forwards[j];

			/* the target as a label too, for alerts to name it: one series per
			 * forward all the same */
			if (f->target_state != TARGET_UNKNOWN)
				put_forward_sample(out, "moletun_forward_target_up", &s->tunnels[i],
						   f, "target", f->target,
						   f->target_state == TARGET_REACHABLE);
		}
	put_metric_family(
	    out, "moletun_tunnel_sidecar_hardened", "gauge",
	    "Whether the last audit of the tunnel's sidecar over its session found it "
	    "hardened (1) or a check failed (0); absent while unknown.");
	for (size_t i = 0; i < s->n_tunnels; i++) {
		const struct status_tunnel *t = &s->tunnels[i];

		if (t->sidecar.state != SIDECAR_UNKNOWN)
			put_tunnel_sample(out, "moletun_tunnel_sidecar_hardened", t,
					  t->sidecar.state == SIDECAR_HARDENED);
	}
	put_metric_family(out, "moletun_forward_probe_failures_total", "counter",
			  "Probes of a local forward's target that failed or timed out.");
	for (size_t i = 0; i < s->n_tunnels; i++)
		for (size_t j = 0; j < s->tunnels[i].n_forwards; j++) {
			const struct status_forward *f = &s->tunnels[i].forwards[j];

			if (f->kind == FORWARD_LOCAL)
				put_forward_sample(out, "moletun_forward_probe_failures_total",
						   &s->tunnels[i], f, NULL, NULL,
						   f->probe_failures);
		}
}

/* Only when alerts are configured, so a daemon without any shows nothing new. */
static void put_alert_families(FILE *out, const struct status *s)
{
	if (s->n_alerts == 0)
		return;
	put_metric_family(out, "moletun_alerts_sent_total", "counter",
			  "Alert events delivered (HTTP 2xx, or exit status 0 for exec), by "
			  "alert target and event (down, up, target_down, target_up, degraded, "
			  "recovered, test, metrics_stale, metrics_fresh, audit_failed).");
	for (size_t i = 0; i < s->n_alerts; i++) {
		const struct status_alert *a = &s->alerts[i];

		for (int k = 0; k < ALERT_EVENT_COUNT; k++) {
			fputs("moletun_alerts_sent_total{", out);
			put_label(out, "alert", a->name, sizeof(a->name), true);
			put_label(out, "event", alert_event_str(k), SIZE_MAX, false);
			fprintf(out, "} %" PRIu64 "\n", a->sent[k]);
		}
	}
	put_metric_family(out, "moletun_alerts_failed_total", "counter",
			  "Alert events not delivered: given up after retries, refused, or "
			  "dropped from a full queue.");
	for (size_t i = 0; i < s->n_alerts; i++) {
		fputs("moletun_alerts_failed_total{", out);
		put_label(out, "alert", s->alerts[i].name, sizeof(s->alerts[i].name), true);
		fprintf(out, "} %" PRIu64 "\n", s->alerts[i].failed);
	}
}

int status_format_metrics(const struct status *s, FILE *out)
{
	for (size_t m = 0; m < sizeof(tunnel_metrics) / sizeof(tunnel_metrics[0]); m++) {
		put_metric_family(out, tunnel_metrics[m].name, tunnel_metrics[m].type,
				  tunnel_metrics[m].help);
		for (size_t i = 0; i < s->n_tunnels; i++)
			put_tunnel_sample(out, tunnel_metrics[m].name, &s->tunnels[i],
					  tunnel_metric_value(m, &s->tunnels[i]));
	}
	for (size_t m = 0; m < sizeof(forward_metrics) / sizeof(forward_metrics[0]); m++)
		put_forward_family(out, m, s);
	put_metric_family(out, "moletun_daemon_nofile_limit", "gauge",
			  "Most descriptors the daemon may hold (soft RLIMIT_NOFILE, raised to the "
			  "hard limit at start).");
	fprintf(out, "moletun_daemon_nofile_limit %" PRIu64 "\n", s->daemon.nofile_limit);
	if (s->daemon.metrics_textfile) {
		put_metric_family(out, "moletun_metrics_textfile_stale", "gauge",
				  "1 when metrics_textfile failed to be written 3 times in a row: "
				  "node_exporter serves an older file.");
		fprintf(out, "moletun_metrics_textfile_stale %d\n",
			s->daemon.metrics_textfile_stale ? 1 : 0);
	}
	put_memory_families(out, &s->memory);
	put_health_families(out, s);
	put_alert_families(out, s);
	return stream_result(out);
}

/* "; primary: target pg_main:5432 unreachable (connect failed: ...)" or "; primary:
 * degraded (rtt 1200 ms)" for a tunnel that is up but not ok. */
static void summary_health(const struct status_tunnel *t, char *raw, size_t size)
{
	if (t->health == HEALTH_DEGRADED) {
		snprintf(raw, size, "; %.*s: degraded (rtt %.0f ms)", (int)sizeof(t->name) - 1,
			 t->name, t->rtt * 1000.0);
		return;
	}
	for (size_t j = 0; j < t->n_forwards; j++) {
		const struct status_forward *f = &t->forwards[j];

		if (f->target_state != TARGET_UNREACHABLE)
			continue;
		/* cut if need be: STATUS= is one short line anyway */
		if (snprintf(raw, size, "; %.*s: target %.*s unreachable (%.*s)",
			     (int)sizeof(t->name) - 1, t->name, 100, f->target, 200,
			     f->target_error[0] ? f->target_error : "no answer") >= (int)size)
			raw[size - 1] = '\0';
		return;
	}
	snprintf(raw, size, "; %.*s: %s", (int)sizeof(t->name) - 1, t->name,
		 tunnel_health_str(t->health));
}

void status_format_summary(const struct status *s, char *buf, size_t size)
{
	static const char ellipsis[] = "; ...";
	size_t used;
	int n;

	if (size == 0)
		return;
	if (s->n_tunnels == 0) {
		snprintf(buf, size, "no tunnels configured");
		return;
	}
	n = snprintf(buf, size, "%zu/%zu tunnels up", status_count_up(s), s->n_tunnels);
	used = n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
	for (size_t i = 0; i < s->n_tunnels; i++) {
		const struct status_tunnel *t = &s->tunnels[i];
		char raw[sizeof(t->name) + sizeof(t->last_error) + 32];
		char piece[sizeof(raw) * 3];
		size_t len;

		if (t->state == TUNNEL_UP && t->health == HEALTH_OK)
			continue;
		if (t->state == TUNNEL_UP)
			summary_health(t, raw, sizeof(raw));
		else if (t->last_error[0])
			snprintf(raw, sizeof(raw), "; %.*s: %s (%.*s)", (int)sizeof(t->name) - 1,
				 t->name, tunnel_state_str(t->state),
				 (int)sizeof(t->last_error) - 1, t->last_error);
		else
			snprintf(raw, sizeof(raw), "; %.*s: %s", (int)sizeof(t->name) - 1, t->name,
				 tunnel_state_str(t->state));
		sanitize_text(raw, sizeof(raw), ' ', piece, sizeof(piece));
		len = strlen(piece);
		if (used + len >= size) {
			if (used + strlen(ellipsis) < size) {
				memcpy(buf + used, ellipsis, strlen(ellipsis) + 1);
				used += strlen(ellipsis);
			}
			break;
		}
		memcpy(buf + used, piece, len + 1);
		used += len;
	}
}
