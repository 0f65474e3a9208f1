#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "status.h"
#include "status_format.h"

#define T0 1714564800 /* 2024-05-01T12:00:00Z */

static void set_tunnel(struct status_tunnel *t, const char *name, enum tunnel_state state,
		       const char *host, const char *last_error)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->state = state;
	t->since.tv_sec = T0;
	snprintf(t->host, sizeof(t->host), "%s", host);
	t->port = 22;
	snprintf(t->user, sizeof(t->user), "deploy");
	snprintf(t->last_error, sizeof(t->last_error), "%s", last_error);
}

static void add_forward(struct status_tunnel *t, enum forward_kind kind, const char *listen,
			const char *target, uint64_t base)
{
	struct status_forward *f;

	t->forwards = realloc(t->forwards, (t->n_forwards + 1) * sizeof(*t->forwards));
	assert_non_null(t->forwards);
	f = &t->forwards[t->n_forwards++];
	memset(f, 0, sizeof(*f));
	f->kind = kind;
	snprintf(f->listen, sizeof(f->listen), "%s", listen);
	snprintf(f->target, sizeof(f->target), "%s", target);
	f->active = base;
	f->connections_total = base + 1;
	f->bytes_in = base + 2;
	f->bytes_out = base + 3;
	f->open_failures = base + 4;
	f->rejected[REJECT_MAX_CONNECTIONS] = base + 5;
	f->rejected[REJECT_DOWN] = base + 6;
}

/*
 * primary (up, through one bastion, one local forward) and replica (backoff, direct, a
 * remote forward, an error).
 */
static void make_sample(struct status *s)
{
	s->daemon.pid = 4242;
	s->daemon.nofile_limit = 524288;
	s->memory = (struct status_memory){
	    .limit = 160 << 20,
	    .used = 100 << 20,
	    .peak = 150 << 20,
	    .by_kind = {[MEMACCT_SESSION] = 60 << 20,
			[MEMACCT_WINDOW] = 30 << 20,
			[MEMACCT_BUFFER] = 2 << 20,
			[MEMACCT_SOCKET] = 8 << 20},
	    .stage = MEMACCT_NO_GROWTH,
	};
	s->n_tunnels = 2;
	s->tunnels = calloc(2, sizeof(*s->tunnels));
	assert_non_null(s->tunnels);
	set_tunnel(&s->tunnels[0], "primary", TUNNEL_UP, "db.example.com", "");
	s->tunnels[0].health = HEALTH_OK;
	s->tunnels[0].rtt_measured = true;
	s->tunnels[0].rtt = 0.01234;
	s->tunnels[0].rtt_last = 0.0151;
	s->tunnels[0].n_via = 1;
	snprintf(s->tunnels[0].via[0], sizeof(s->tunnels[0].via[0]), "ops@bastion:22");
	add_forward(&s->tunnels[0], FORWARD_LOCAL, "127.0.0.1:5433", "pg_main:5432", 0);
	s->tunnels[0].forwards[0].target_state = TARGET_REACHABLE;
	s->tunnels[0].forwards[0].probe_rtt_measured = true;
	s->tunnels[0].forwards[0].probe_rtt = 0.0021;
	s->tunnels[0].forwards[0].probe_failures = 2;
	s->tunnels[0].forwards[0].window_largest = 4194304;
	s->tunnels[0].forwards[0].window_total = 4718592;
	set_tunnel(&s->tunnels[1], "replica", TUNNEL_BACKOFF, "fd00::5", "connection refused");
	s->tunnels[1].health = HEALTH_DOWN;
	s->tunnels[1].port = 2222;
	s->tunnels[1].reconnects = 7;
	s->tunnels[1].since.tv_sec = T0 + 3600;
	add_forward(&s->tunnels[1], FORWARD_REMOTE, "0.0.0.0:8080", "localhost:80", 10);
	/* primary's sidecar passed its audit; replica's failed two checks before it went down */
	s->tunnels[0].sidecar.state = SIDECAR_HARDENED;
	s->tunnels[0].sidecar.checked = true;
	s->tunnels[0].sidecar.checked_at.tv_sec = T0 + 60;
	s->tunnels[1].sidecar.state = SIDECAR_NOT_HARDENED;
	s->tunnels[1].sidecar.checked = true;
	s->tunnels[1].sidecar.checked_at.tv_sec = T0 + 120;
	s->tunnels[1].sidecar.n_failed = 2;
	snprintf(s->tunnels[1].sidecar.failed[0], sizeof(s->tunnels[1].sidecar.failed[0]),
		 "session");
	snprintf(s->tunnels[1].sidecar.failed[1], sizeof(s->tunnels[1].sidecar.failed[1]),
		 "direct_tcpip 127.0.0.1:22");
}

typedef int (*render_fn)(const struct status *s, FILE *out);

static char *render(const struct status *s, render_fn fn)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);

	assert_non_null(out);
	assert_int_equal(fn(s, out), 0);
	assert_int_equal(fclose(out), 0);
	return buf;
}

static int render_table_at_t0_plus_192(const struct status *s, FILE *out)
{
	return status_format_table(s, T0 + 3600 + 192, out);
}

static int render_table_before_t0(const struct status *s, FILE *out)
{
	return status_format_table(s, T0 - 100, out);
}

static void test_state_names(void **state)
{
	assert_string_equal(tunnel_state_str(TUNNEL_CONNECTING), "connecting");
	assert_string_equal(tunnel_state_str(TUNNEL_UP), "up");
	assert_string_equal(tunnel_state_str(TUNNEL_BACKOFF), "backoff");
	assert_string_equal(tunnel_state_str((enum tunnel_state)42), "unknown");
	assert_string_equal(reject_reason_str(REJECT_MAX_CONNECTIONS), "max_connections");
	assert_string_equal(reject_reason_str(REJECT_DOWN), "down");
	assert_string_equal(reject_reason_str(N_REJECT_REASONS), "unknown");
}

static void test_status_free(void **state)
{
	struct status s = {0};

	status_free(NULL);
	status_free(&s);
	make_sample(&s);
	status_free(&s);
	assert_null(s.tunnels);
	assert_int_equal(s.n_tunnels, 0);
	status_free(&s);
}

static void test_json_exact(void **state)
{
	struct status s = {0};
	char *json;

	make_sample(&s);
	json = render(&s, status_format_json);
	assert_string_equal(
	    json,
	    "{\"tunnels\":["
	    "{\"name\":\"primary\",\"state\":\"up\",\"health\":\"ok\",\"rtt_ms\":12.3,"
	    "\"rtt_last_ms\":15.1,\"since\":\"2024-05-01T12:00:00Z\","
	    "\"host\":\"db.example.com\",\"port\":22,\"user\":\"deploy\","
	    "\"via\":[\"ops@bastion:22\"],\"reconnects\":0,"
	    "\"last_error\":null,\"sidecar\":\"hardened\",\"sidecar_failed\":[],"
	    "\"sidecar_failed_count\":0,\"sidecar_checked\":\"2024-05-01T12:01:00Z\","
	    "\"sidecar_error\":null,"
	    "\"forwards\":[{\"type\":\"local\",\"listen\":\"127.0.0.1:5433\","
	    "\"target\":\"pg_main:5432\",\"active\":0,\"connections_total\":1,\"bytes_in\":2,"
	    "\"bytes_out\":3,\"open_failures\":4,\"rejected\":11,"
	    "\"rejected_by_reason\":{\"max_connections\":5,\"down\":6,\"memory\":0},"
	    "\"target_state\":\"reachable\",\"target_error\":null,\"probe_rtt_ms\":2.1,"
	    "\"probe_failures\":2,\"window_largest_bytes\":4194304,"
	    "\"window_total_bytes\":4718592}]},"
	    "{\"name\":\"replica\",\"state\":\"backoff\",\"health\":\"down\",\"rtt_ms\":null,"
	    "\"rtt_last_ms\":null,\"since\":\"2024-05-01T13:00:00Z\","
	    "\"host\":\"fd00::5\",\"port\":2222,\"user\":\"deploy\",\"via\":[],\"reconnects\":7,"
	    "\"last_error\":\"connection refused\",\"sidecar\":\"not_hardened\","
	    "\"sidecar_failed\":[\"session\",\"direct_tcpip 127.0.0.1:22\"],"
	    "\"sidecar_failed_count\":2,\"sidecar_checked\":\"2024-05-01T12:02:00Z\","
	    "\"sidecar_error\":null,\"forwards\":[{\"type\":\"remote\","
	    "\"listen\":\"0.0.0.0:8080\",\"target\":\"localhost:80\",\"active\":10,"
	    "\"connections_total\":11,\"bytes_in\":12,\"bytes_out\":13,\"open_failures\":14,"
	    "\"rejected\":31,\"rejected_by_reason\":{\"max_connections\":15,\"down\":16,"
	    "\"memory\":0},"
	    "\"target_state\":\"unknown\",\"target_error\":null,\"probe_rtt_ms\":null,"
	    "\"probe_failures\":0,\"window_largest_bytes\":0,\"window_total_bytes\":0}]}"
	    "],\"daemon\":{\"pid\":4242,\"nofile_limit\":524288,\"metrics_textfile_stale\":null,"
	    "\"metrics_textfile_error\":null},\"memory\":{"
	    "\"limit_bytes\":167772160,\"used_bytes\":104857600,\"peak_bytes\":157286400,"
	    "\"stage\":\"no_growth\",\"by_kind\":{\"session\":62914560,\"window\":31457280,"
	    "\"buffer\":2097152,\"socket\":8388608}}}\n");
	free(json);
	status_free(&s);
}

static void test_json_empty_and_big_numbers(void **state)
{
	struct status s = {0};
	char *json = render(&s, status_format_json);

	assert_string_equal(json,
			    "{\"tunnels\":[],\"daemon\":{\"pid\":0,\"nofile_limit\":0,"
			    "\"metrics_textfile_stale\":null,\"metrics_textfile_error\":null},"
			    "\"memory\":{\"limit_bytes\":0,\"used_bytes\":0,\"peak_bytes\":0,"
			    "\"stage\":\"ok\",\"by_kind\":{\"session\":0,\"window\":0,"
			    "\"buffer\":0,\"socket\":0}}}\n");
	free(json);
	make_sample(&s);
	s.daemon.nofile_limit = UINT64_MAX;
	s.tunnels[0].forwards[0].bytes_out = UINT64_MAX;
	s.tunnels[0].port = 65535;
	json = render(&s, status_format_json);
	assert_non_null(strstr(json, "\"bytes_out\":18446744073709551615,"));
	assert_non_null(strstr(json, "\"nofile_limit\":18446744073709551615,"));
	s.memory.used = UINT64_MAX;
	free(json);
	json = render(&s, status_format_json);
	assert_non_null(strstr(json, "\"used_bytes\":18446744073709551615,"));
	assert_non_null(strstr(json, "\"port\":65535,"));
	free(json);
	status_free(&s);
}

static void test_json_escaping(void **state)
{
	struct status s = {0};
	char *json;

	make_sample(&s);
	snprintf(s.tunnels[0].name, sizeof(s.tunnels[0].name), "a\"b\\c\nd\te\x01\x1f\x7f/");
	/* é (2 bytes), € (3), 😀 (4) pass through; broken sequences become U+FFFD. */
	snprintf(
	    s.tunnels[0].last_error, sizeof(s.tunnels[0].last_error),
	    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xff \xc0\xaf \xed\xa0\x80 \r\b\f \xe2\x82");
	json = render(&s, status_format_json);
	assert_non_null(strstr(json, "\"name\":\"a\\\"b\\\\c\\nd\\te\\u0001\\u001f\\u007f/\""));
	assert_non_null(strstr(json, "\"last_error\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
				     "\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd "
				     "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \\r\\b\\f "
				     "\xef\xbf\xbd\xef\xbf\xbd\""));
	free(json);
	status_free(&s);
}

static void test_json_unterminated_field(void **state)
{
	struct status s = {0};
	char expected[200];
	char *json;

	make_sample(&s);
	memset(s.tunnels[0].name, 'n', sizeof(s.tunnels[0].name));
	json = render(&s, status_format_json);
	snprintf(expected, sizeof(expected), "\"name\":\"%.*s\",", (int)sizeof(s.tunnels[0].name),
		 s.tunnels[0].name);
	assert_non_null(strstr(json, expected));
	free(json);
	status_free(&s);
}

static void test_age(void **state)
{
	static const struct {
		uint64_t seconds;
		const char *text;
	} cases[] = {
	    {0, "0s"},	       {59, "59s"},	   {60, "1m00s"},     {192, "3m12s"},
	    {3599, "59m59s"},  {3600, "1h00m"},	   {86399, "23h59m"}, {86400, "1d00h"},
	    {100000, "1d03h"}, {864000, "10d00h"},
	};
	char buf[32];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		status_format_age(cases[i].seconds, buf, sizeof(buf));
		assert_string_equal(buf, cases[i].text);
	}
}

static void test_table_exact(void **state)
{
	struct status s = {0};
	char *table;

	make_sample(&s);
	/* rejections are shown only when there were some */
	memset(s.tunnels[0].forwards[0].rejected, 0, sizeof(s.tunnels[0].forwards[0].rejected));
	table = render(&s, render_table_at_t0_plus_192);
	assert_string_equal(
	    table,
	    "TUNNEL   STATE    HEALTH  SIDECAR       RTT   SINCE  ENDPOINT                       "
	    "              RECONNECTS  LAST ERROR\n"
	    "primary  up       ok      hardened      12ms  1h03m  deploy@db.example.com:22 via "
	    "ops@bastion:22  0           -\n"
	    "  local   127.0.0.1:5433  -> pg_main:5432  0 active\n"
	    "replica  backoff  down    not_hardened  -     3m12s  deploy@[fd00::5]:2222          "
	    "              7           connection refused\n"
	    "  remote  0.0.0.0:8080    -> localhost:80  10 active, 31 rejected\n"
	    "memory: 100.0 of 160.0 MiB, no_growth\n");
	free(table);
	/* the memory account is shown only when it sheds */
	s.memory.stage = MEMACCT_OK;
	table = render(&s, render_table_at_t0_plus_192);
	assert_null(strstr(table, "memory"));
	free(table);

	/* An unreachable target says so, with the server's reason. */
	s.tunnels[0].health = HEALTH_TARGET_DOWN;
	s.tunnels[0].forwards[0].target_state = TARGET_UNREACHABLE;
	snprintf(s.tunnels[0].forwards[0].target_error,
		 sizeof(s.tunnels[0].forwards[0].target_error),
		 "connect failed: Connection refused");
	table = render(&s, render_table_at_t0_plus_192);
	assert_non_null(
	    strstr(table, "primary  up       target_down  hardened      12ms  1h03m  "));
	assert_non_null(strstr(table, "  local   127.0.0.1:5433  -> pg_main:5432  0 active, target "
				      "unreachable (connect failed: Connection refused)\n"));
	free(table);

	/* A tunnel that went down shows no RTT: the last one measured is not its RTT now. */
	s.tunnels[0].state = TUNNEL_BACKOFF;
	s.tunnels[0].health = HEALTH_DOWN;
	table = render(&s, render_table_at_t0_plus_192);
	assert_non_null(strstr(table, "primary  backoff  down    hardened      -    1h03m  "));
	free(table);
	status_free(&s);
}

/* The proxy_jump path: JSON array in order, the table after "via", hops from the config. */
static void test_via(void **state)
{
	const struct jump_hop hops[] = {
	    {.user = "ops", .host = "bastion", .port = 22},
	    {.user = "deploy", .host = "fd00::7", .port = 2222},
	};
	struct status s = {0};
	char *out;

	make_sample(&s);
	status_tunnel_set_via(&s.tunnels[0], hops, 2);
	assert_int_equal(s.tunnels[0].n_via, 2);
	assert_string_equal(s.tunnels[0].via[1], "deploy@[fd00::7]:2222");
	out = render(&s, status_format_json);
	assert_non_null(strstr(
	    out, "\"user\":\"deploy\",\"via\":[\"ops@bastion:22\",\"deploy@[fd00::7]:2222\"],"
		 "\"reconnects\":0,"));
	free(out);
	out = render(&s, render_table_at_t0_plus_192);
	assert_non_null(
	    strstr(out, "  deploy@db.example.com:22 via ops@bastion:22,deploy@[fd00::7]:2222  0 "));
	free(out);
	/* a hop's text is the server's concern no more than a name is: escaped, sanitized */
	snprintf(s.tunnels[0].via[0], sizeof(s.tunnels[0].via[0]), "o\"ps\x1b@b:22");
	out = render(&s, status_format_json);
	assert_non_null(strstr(out, "\"via\":[\"o\\\"ps\\u001b@b:22\","));
	free(out);
	out = render(&s, render_table_at_t0_plus_192);
	assert_non_null(strstr(out, " via o\"ps?@b:22,"));
	free(out);
	status_tunnel_set_via(&s.tunnels[0], NULL, 0);
	out = render(&s, status_format_json);
	assert_non_null(strstr(out, "\"user\":\"deploy\",\"via\":[],\"reconnects\":0,"));
	free(out);
	status_free(&s);
}

static void test_table_sanitizes(void **state)
{
	struct status s = {0};
	char *table;

	make_sample(&s);
	/* An SSH server's words must not drive the terminal: ESC, CR, C1 CSI all become '?'. */
	snprintf(s.tunnels[1].last_error, sizeof(s.tunnels[1].last_error),
		 "bad\x1b[31m red\r\xc2\x9b"
		 "2J caf\xc3\xa9 \xff");
	table = render(&s, render_table_at_t0_plus_192);
	assert_non_null(strstr(table, "bad?[31m red??2J caf\xc3\xa9 \xef\xbf\xbd\n"));
	assert_null(strchr(table, '\x1b'));
	assert_null(strchr(table, '\r'));
	free(table);
	status_free(&s);
}

static void test_table_empty_and_future(void **state)
{
	struct status s = {0};
	char *table = render(&s, render_table_at_t0_plus_192);

	assert_string_equal(table, "no tunnels configured\n");
	free(table);
	make_sample(&s);
	/* A clock that went backwards shows 0s, not a huge age. */
	table = render(&s, render_table_before_t0);
	assert_non_null(strstr(table, "primary  up       ok      hardened      12ms  0s     "));
	free(table);
	status_free(&s);
}

static void test_stream_error(void **state)
{
	struct status s = {0};
	FILE *ro = fopen("/dev/null", "r");

	assert_non_null(ro);
	make_sample(&s);
	assert_int_equal(status_format_json(&s, ro), -EIO);
	clearerr(ro);
	assert_int_equal(status_format_metrics(&s, ro), -EIO);
	clearerr(ro);
	assert_int_equal(status_format_table(&s, T0, ro), -EIO);
	fclose(ro);
	status_free(&s);
}

static void test_metrics_exact(void **state)
{
	struct status s = {0};
	char *text;

	make_sample(&s);
	text = render(&s, status_format_metrics);
	/* the families before the health ones, then the health ones */
	{
		static const char before[] =
		    "# HELP moletun_tunnel_up Whether the tunnel's SSH session is established (1) "
		    "or "
		    "not (0).\n"
		    "# TYPE moletun_tunnel_up gauge\n"
		    "moletun_tunnel_up{tunnel=\"primary\"} 1\n"
		    "moletun_tunnel_up{tunnel=\"replica\"} 0\n"
		    "# HELP moletun_tunnel_reconnects_total SSH sessions re-established after the "
		    "first one.\n"
		    "# TYPE moletun_tunnel_reconnects_total counter\n"
		    "moletun_tunnel_reconnects_total{tunnel=\"primary\"} 0\n"
		    "moletun_tunnel_reconnects_total{tunnel=\"replica\"} 7\n"
		    "# HELP moletun_tunnel_state_since_seconds Unix time of the tunnel's last "
		    "state "
		    "change.\n"
		    "# TYPE moletun_tunnel_state_since_seconds gauge\n"
		    "moletun_tunnel_state_since_seconds{tunnel=\"primary\"} 1714564800\n"
		    "moletun_tunnel_state_since_seconds{tunnel=\"replica\"} 1714568400\n"
		    "# HELP moletun_forward_active_connections Connections currently open through "
		    "the "
		    "forward.\n"
		    "# TYPE moletun_forward_active_connections gauge\n"
		    "moletun_forward_active_connections{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\"} 0\n"
		    "moletun_forward_active_connections{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\"} 10\n"
		    "# HELP moletun_forward_connections_total Connections accepted by the "
		    "forward.\n"
		    "# TYPE moletun_forward_connections_total counter\n"
		    "moletun_forward_connections_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\"} 1\n"
		    "moletun_forward_connections_total{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\"} 11\n"
		    "# HELP moletun_forward_bytes_total Bytes carried by the forward; "
		    "direction=\"in\" "
		    "towards the connecting client, \"out\" towards the SSH peer.\n"
		    "# TYPE moletun_forward_bytes_total counter\n"
		    "moletun_forward_bytes_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",direction=\"in\"} 2\n"
		    "moletun_forward_bytes_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",direction=\"out\"} 3\n"
		    "moletun_forward_bytes_total{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\",direction=\"in\"} 12\n"
		    "moletun_forward_bytes_total{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\",direction=\"out\"} 13\n"
		    "# HELP moletun_forward_open_failures_total SSH channels the forward failed to "
		    "open.\n"
		    "# TYPE moletun_forward_open_failures_total counter\n"
		    "moletun_forward_open_failures_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\"} 4\n"
		    "moletun_forward_open_failures_total{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\"} 14\n"
		    "# HELP moletun_forward_rejected_total Clients the forward closed without "
		    "serving "
		    "them; reason=\"max_connections\" when it was full, \"down\" when the tunnel "
		    "was not "
		    "up (at once, or when down_hold ran out), \"memory\" when the daemon's memory "
		    "account had no room for it.\n"
		    "# TYPE moletun_forward_rejected_total counter\n"
		    "moletun_forward_rejected_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",reason=\"max_connections\"} 5\n"
		    "moletun_forward_rejected_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",reason=\"down\"} 6\n"
		    "moletun_forward_rejected_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",reason=\"memory\"} 0\n"
		    "moletun_forward_rejected_total{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\",reason=\"max_connections\"} 15\n"
		    "moletun_forward_rejected_total{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\",reason=\"down\"} 16\n"
		    "moletun_forward_rejected_total{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\",reason=\"memory\"} 0\n"
		    "# HELP moletun_forward_window_bytes Receive windows of the forward's open "
		    "channels: stat=\"largest\" the largest one, \"total\" their sum.\n"
		    "# TYPE moletun_forward_window_bytes gauge\n"
		    "moletun_forward_window_bytes{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",stat=\"largest\"} 4194304\n"
		    "moletun_forward_window_bytes{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",stat=\"total\"} 4718592\n"
		    "moletun_forward_window_bytes{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\",stat=\"largest\"} 0\n"
		    "moletun_forward_window_bytes{tunnel=\"replica\",type=\"remote\","
		    "forward=\"0.0.0.0:8080\",stat=\"total\"} 0\n"
		    "# HELP moletun_daemon_nofile_limit Most descriptors the daemon may hold (soft "
		    "RLIMIT_NOFILE, raised to the hard limit at start).\n"
		    "# TYPE moletun_daemon_nofile_limit gauge\n"
		    "moletun_daemon_nofile_limit 524288\n";
		static const char memory[] =
		    "# HELP moletun_memory_limit_bytes The daemon's memory account's limit "
		    "(memory_limit).\n"
		    "# TYPE moletun_memory_limit_bytes gauge\n"
		    "moletun_memory_limit_bytes 167772160\n"
		    "# HELP moletun_memory_used_bytes What the memory account counts now, by kind: "
		    "session (libssh2), window (granted, not used by the server yet), buffer "
		    "(moletun's), socket (client sockets' kernel queues at their bounds).\n"
		    "# TYPE moletun_memory_used_bytes gauge\n"
		    "moletun_memory_used_bytes{kind=\"session\"} 62914560\n"
		    "moletun_memory_used_bytes{kind=\"window\"} 31457280\n"
		    "moletun_memory_used_bytes{kind=\"buffer\"} 2097152\n"
		    "moletun_memory_used_bytes{kind=\"socket\"} 8388608\n"
		    "# HELP moletun_memory_peak_bytes The most the memory account counted since "
		    "the daemon started.\n"
		    "# TYPE moletun_memory_peak_bytes gauge\n"
		    "moletun_memory_peak_bytes 157286400\n"
		    "# HELP moletun_memory_stage 1 for the memory account's current stage (ok, "
		    "no_growth, shed, refuse_fat, full), 0 for the others.\n"
		    "# TYPE moletun_memory_stage gauge\n"
		    "moletun_memory_stage{stage=\"ok\"} 0\n"
		    "moletun_memory_stage{stage=\"no_growth\"} 1\n"
		    "moletun_memory_stage{stage=\"shed\"} 0\n"
		    "moletun_memory_stage{stage=\"refuse_fat\"} 0\n"
		    "moletun_memory_stage{stage=\"full\"} 0\n";
		static const char health[] =
		    "# HELP moletun_tunnel_rtt_seconds Smoothed round-trip time of the tunnel's "
		    "SSH "
		    "keepalives (RFC 6298 SRTT); absent until measured.\n"
		    "# TYPE moletun_tunnel_rtt_seconds gauge\n"
		    "moletun_tunnel_rtt_seconds{tunnel=\"primary\"} 0.012340\n"
		    "# HELP moletun_tunnel_health 1 for the tunnel's current health (ok, degraded, "
		    "target_down, down), 0 for the others.\n"
		    "# TYPE moletun_tunnel_health gauge\n"
		    "moletun_tunnel_health{tunnel=\"primary\",health=\"ok\"} 1\n"
		    "moletun_tunnel_health{tunnel=\"primary\",health=\"degraded\"} 0\n"
		    "moletun_tunnel_health{tunnel=\"primary\",health=\"target_down\"} 0\n"
		    "moletun_tunnel_health{tunnel=\"primary\",health=\"down\"} 0\n"
		    "moletun_tunnel_health{tunnel=\"replica\",health=\"ok\"} 0\n"
		    "moletun_tunnel_health{tunnel=\"replica\",health=\"degraded\"} 0\n"
		    "moletun_tunnel_health{tunnel=\"replica\",health=\"target_down\"} 0\n"
		    "moletun_tunnel_health{tunnel=\"replica\",health=\"down\"} 1\n"
		    "# HELP moletun_forward_target_up Whether a local forward's target answered "
		    "the last "
		    "probe or client (1) or not (0); absent while unknown.\n"
		    "# TYPE moletun_forward_target_up gauge\n"
		    "moletun_forward_target_up{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\",target=\"pg_main:5432\"} 1\n"
		    "# HELP moletun_tunnel_sidecar_hardened Whether the last audit of the "
		    "tunnel's sidecar over its session found it hardened (1) or a check failed "
		    "(0); absent while unknown.\n"
		    "# TYPE moletun_tunnel_sidecar_hardened gauge\n"
		    "moletun_tunnel_sidecar_hardened{tunnel=\"primary\"} 1\n"
		    "moletun_tunnel_sidecar_hardened{tunnel=\"replica\"} 0\n"
		    "# HELP moletun_forward_probe_failures_total Probes of a local forward's "
		    "target that "
		    "failed or timed out.\n"
		    "# TYPE moletun_forward_probe_failures_total counter\n"
		    "moletun_forward_probe_failures_total{tunnel=\"primary\",type=\"local\","
		    "forward=\"127.0.0.1:5433\"} 2\n";

		assert_int_equal(strncmp(text, before, strlen(before)), 0);
		assert_int_equal(strncmp(text + strlen(before), memory, strlen(memory)), 0);
		assert_string_equal(text + strlen(before) + strlen(memory), health);
	}
	free(text);
	status_free(&s);
}

/*
 * The checks `promtool check metrics` makes, for machines without promtool: metric and
 * label names, one HELP then one TYPE per family before its samples, families not split,
 * counters named *_total, label values escaped (only \\ \" \n), no duplicate series.
 * A sample has labels in braces, or none and no braces.
 * Returns NULL or a description of the first problem.
 */
static const char *lint_metrics(const char *text, char *why, size_t why_size)
{
	char family[128] = "", type[16] = "", seen[64][128], series[256][512];
	size_t n_seen = 0, n_series = 0;
	regex_t name_re, label_re;
	const char *line = text;
	bool help_seen = false;

	assert_int_equal(regcomp(&name_re, "^[a-zA-Z_:][a-zA-Z0-9_:]*$", REG_EXTENDED | REG_NOSUB),
			 0);
	assert_int_equal(regcomp(&label_re, "^[a-zA-Z_][a-zA-Z0-9_]*$", REG_EXTENDED | REG_NOSUB),
			 0);
	why[0] = '\0';
	while (*line && !why[0]) {
		const char *end = strchr(line, '\n');
		char buf[1024], name[128];

		if (!end) {
			snprintf(why, why_size, "last line has no newline");
			break;
		}
		snprintf(buf, sizeof(buf), "%.*s", (int)(end - line), line);
		line = end + 1;
		if (strncmp(buf, "# HELP ", 7) == 0) {
			sscanf(buf + 7, "%127s", name);
			for (size_t i = 0; i < n_seen; i++)
				if (strcmp(seen[i], name) == 0)
					snprintf(why, why_size, "family %s split or repeated",
						 name);
			if (n_seen == 64)
				snprintf(why, why_size, "too many families for the linter");
			else
				snprintf(seen[n_seen++], sizeof(seen[0]), "%s", name);
			if (regexec(&name_re, name, 0, NULL, 0) != 0)
				snprintf(why, why_size, "bad metric name %s", name);
			snprintf(family, sizeof(family), "%s", name);
			type[0] = '\0';
			help_seen = true;
		} else if (strncmp(buf, "# TYPE ", 7) == 0) {
			if (sscanf(buf + 7, "%127s %15s", name, type) != 2)
				snprintf(why, why_size, "bad TYPE line %.200s", buf);
			else if (!help_seen || strcmp(name, family) != 0)
				snprintf(why, why_size, "TYPE %s without HELP just before", name);
			else if (strcmp(type, "counter") && strcmp(type, "gauge"))
				snprintf(why, why_size, "unexpected type %s", type);
			else if (!strcmp(type, "counter") &&
				 (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total")))
				snprintf(why, why_size, "counter %s does not end in _total", name);
			help_seen = false;
		} else if (buf[0] == '#') {
			snprintf(why, why_size, "unexpected comment %.200s", buf);
		} else {
			size_t name_len = strlen(family), key_len;
			const char *p = buf + name_len, *value;
			char *value_end;

			if (strncmp(buf, family, name_len) || (*p != '{' && *p != ' ')) {
				snprintf(why, why_size, "sample outside its family: %.200s", buf);
				break;
			}
			if (!type[0])
				snprintf(why, why_size, "sample before TYPE: %.200s", buf);
			if (*p == '{') {
				p++;
				while (*p && *p != '}' && !why[0]) {
					const char *eq = strchr(p, '=');
					char label[64];

					if (!eq || eq[1] != '"' || eq - p >= (long)sizeof(label)) {
						snprintf(why, why_size, "bad label in %.200s", buf);
						break;
					}
					snprintf(label, sizeof(label), "%.*s", (int)(eq - p), p);
					if (regexec(&label_re, label, 0, NULL, 0) != 0)
						snprintf(why, why_size, "bad label name %s", label);
					for (p = eq + 2; *p && *p != '"'; p++) {
						if (*p == '\\' && !strchr("\\\"n", *++p))
							snprintf(why, why_size,
								 "bad escape in %.200s", buf);
						if (*p == '\n')
							snprintf(why, why_size,
								 "raw newline in %.200s", buf);
					}
					if (*p != '"') {
						snprintf(why, why_size,
							 "unterminated value in %.200s", buf);
						break;
					}
					p++;
					if (*p == ',')
						p++;
				}
				if (why[0])
					break;
				if (*p == '}')
					p++;
			}
			/* p is just past the series: name, or name{labels} */
			if (*p != ' ') {
				snprintf(why, why_size, "no value in %.200s", buf);
				break;
			}
			value = p + 1;
			strtod(value, &value_end);
			if (value_end == value || *value_end)
				snprintf(why, why_size, "bad value in %.200s", buf);
			key_len = (size_t)(p - buf);
			for (size_t i = 0; i < n_series; i++)
				if (strncmp(series[i], buf, key_len) == 0 &&
				    series[i][key_len] == '\0')
					snprintf(why, why_size, "duplicate series %.200s", buf);
			if (n_series < 256)
				snprintf(series[n_series++], sizeof(series[0]), "%.*s",
					 (int)key_len, buf);
		}
	}
	regfree(&name_re);
	regfree(&label_re);
	return why[0] ? why : NULL;
}

static void test_metrics_lint(void **state)
{
	struct status s = {0};
	char why[512];
	char *text;

	make_sample(&s);
	snprintf(s.tunnels[0].name, sizeof(s.tunnels[0].name), "we\"ird\\na\nme\t\xff");
	snprintf(s.tunnels[1].forwards[0].listen, sizeof(s.tunnels[1].forwards[0].listen),
		 "[::1]:8080");
	text = render(&s, status_format_metrics);
	assert_null(lint_metrics(text, why, sizeof(why)));
	assert_non_null(
	    strstr(text, "moletun_tunnel_up{tunnel=\"we\\\"ird\\\\na\\nme\t\xef\xbf\xbd\"} 1\n"));
	/* The linter itself catches what it claims to catch. */
	assert_non_null(lint_metrics(
	    "# HELP x_count c\n# TYPE x_count counter\nx_count{a=\"1\"} 1\n", why, sizeof(why)));
	assert_non_null(lint_metrics("# TYPE x gauge\nx{a=\"1\"} 1\n", why, sizeof(why)));
	assert_non_null(
	    lint_metrics("# HELP x h\n# TYPE x gauge\nx{a=\"\\t\"} 1\n", why, sizeof(why)));
	assert_non_null(lint_metrics("# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n",
				     why, sizeof(why)));
	assert_non_null(lint_metrics("# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\n"
				     "# HELP x h\n# TYPE x gauge\n",
				     why, sizeof(why)));
	/* a sample without labels has no braces */
	assert_null(lint_metrics("# HELP x h\n# TYPE x gauge\nx 1\n", why, sizeof(why)));
	assert_non_null(lint_metrics("# HELP x h\n# TYPE x gauge\nx 1\nx 2\n", why, sizeof(why)));
	assert_non_null(lint_metrics("# HELP x h\n# TYPE x gauge\nx\n", why, sizeof(why)));
	assert_non_null(lint_metrics("# HELP x h\n# TYPE x gauge\nxy 1\n", why, sizeof(why)));
	free(text);
	status_free(&s);

	/* No tunnels: every family is still announced, and still valid. */
	text = render(&s, status_format_metrics);
	assert_null(lint_metrics(text, why, sizeof(why)));
	free(text);
}

/* Runs the real promtool when it is installed (Debian package "prometheus"). */
static void test_metrics_promtool(void **state)
{
	struct status s = {0};
	char *text;
	FILE *p;
	int status;

	if (system("command -v promtool >/dev/null 2>&1") != 0) {
		print_message("promtool not installed; lint_metrics covers its checks\n");
		skip();
	}
	make_sample(&s);
	text = render(&s, status_format_metrics);
	p = popen("promtool check metrics", "w");
	assert_non_null(p);
	fputs(text, p);
	status = pclose(p);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	free(text);
	status_free(&s);
}

/* Alert counters: two families after the others, only when alerts are configured. */
static void test_metrics_alerts(void **state)
{
	static const char families[] =
	    "# HELP moletun_alerts_sent_total Alert events delivered (HTTP 2xx, or exit status 0 "
	    "for exec), by alert target and event (down, up, target_down, target_up, degraded, "
	    "recovered, test, metrics_stale, metrics_fresh, audit_failed).\n"
	    "# TYPE moletun_alerts_sent_total counter\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"down\"} 2\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"up\"} 1\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"target_down\"} 5\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"target_up\"} 4\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"degraded\"} 7\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"recovered\"} 6\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"test\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"metrics_stale\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"metrics_fresh\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"ops\",event=\"audit_failed\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"down\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"up\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"target_down\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"target_up\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"degraded\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"recovered\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"test\"} 4\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"metrics_stale\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"metrics_fresh\"} 0\n"
	    "moletun_alerts_sent_total{alert=\"pa\\\"ger\",event=\"audit_failed\"} 0\n"
	    "# HELP moletun_alerts_failed_total Alert events not delivered: given up after "
	    "retries, refused, or dropped from a full queue.\n"
	    "# TYPE moletun_alerts_failed_total counter\n"
	    "moletun_alerts_failed_total{alert=\"ops\"} 3\n"
	    "moletun_alerts_failed_total{alert=\"pa\\\"ger\"} 0\n";
	struct status s = {0};
	char why[512];
	char *text, *plain;

	make_sample(&s);
	plain = render(&s, status_format_metrics);
	s.alerts = calloc(2, sizeof(*s.alerts));
	assert_non_null(s.alerts);
	s.n_alerts = 2;
	snprintf(s.alerts[0].name, sizeof(s.alerts[0].name), "ops");
	s.alerts[0].sent[ALERT_EVENT_DOWN] = 2;
	s.alerts[0].sent[ALERT_EVENT_UP] = 1;
	s.alerts[0].sent[ALERT_EVENT_TARGET_DOWN] = 5;
	s.alerts[0].sent[ALERT_EVENT_TARGET_UP] = 4;
	s.alerts[0].sent[ALERT_EVENT_DEGRADED] = 7;
	s.alerts[0].sent[ALERT_EVENT_RECOVERED] = 6;
	s.alerts[0].failed = 3;
	snprintf(s.alerts[1].name, sizeof(s.alerts[1].name), "pa\"ger");
	s.alerts[1].sent[ALERT_EVENT_TEST] = 4;
	text = render(&s, status_format_metrics);
	assert_int_equal(strlen(text), strlen(plain) + strlen(families));
	assert_memory_equal(text, plain, strlen(plain));
	assert_string_equal(text + strlen(plain), families);
	assert_null(lint_metrics(text, why, sizeof(why)));
	free(text);
	free(plain);
	status_free(&s);
	assert_null(s.alerts);
	assert_int_equal(s.n_alerts, 0);
}

/* A metrics_textfile node_exporter serves stale: in JSON, metrics and under the table. */
static void test_metrics_textfile_state(void **state)
{
	struct status s = {0};
	char why[512];
	char *text;

	make_sample(&s);
	text = render(&s, status_format_metrics);
	assert_null(strstr(text, "moletun_metrics_textfile_stale"));
	free(text);

	s.daemon.metrics_textfile = true;
	text = render(&s, status_format_json);
	assert_non_null(
	    strstr(text, "\"metrics_textfile_stale\":false,\"metrics_textfile_error\":null},\"memory\":"));
	free(text);
	text = render(&s, status_format_metrics);
	assert_non_null(strstr(text, "# TYPE moletun_metrics_textfile_stale gauge\n"
				     "moletun_metrics_textfile_stale 0\n"));
	free(text);
	text = render(&s, render_table_at_t0_plus_192);
	assert_null(strstr(text, "metrics_textfile"));
	free(text);

	s.daemon.metrics_textfile_stale = true;
	snprintf(s.daemon.metrics_textfile_error, sizeof(s.daemon.metrics_textfile_error),
		 "Operation not permitted");
	text = render(&s, status_format_json);
	assert_non_null(strstr(text, "\"metrics_textfile_stale\":true,"
				     "\"metrics_textfile_error\":\"Operation not permitted\"},\"memory\":"));
	free(text);
	text = render(&s, status_format_metrics);
	assert_non_null(strstr(text, "moletun_metrics_textfile_stale 1\n"));
	assert_null(lint_metrics(text, why, sizeof(why)));
	free(text);
	text = render(&s, render_table_at_t0_plus_192);
	assert_non_null(strstr(text, "\nmetrics_textfile stale (Operation not permitted): "
				     "node_exporter serves an old file\n"));
	free(text);
	status_free(&s);
}

static void test_summary(void **state)
{
	struct status s = {0};
	char buf[256], small[41];

	status_format_summary(&s, buf, sizeof(buf));
	assert_string_equal(buf, "no tunnels configured");
	make_sample(&s);
	assert_int_equal(status_count_up(&s), 1);
	status_format_summary(&s, buf, sizeof(buf));
	assert_string_equal(buf, "1/2 tunnels up; replica: backoff (connection refused)");
	s.tunnels[0].state = TUNNEL_CONNECTING;
	snprintf(s.tunnels[1].last_error, sizeof(s.tunnels[1].last_error), "multi\nline\xff");
	status_format_summary(&s, buf, sizeof(buf));
	assert_string_equal(
	    buf, "0/2 tunnels up; primary: connecting; replica: backoff (multi line\xef\xbf\xbd)");
	status_format_summary(&s, small, sizeof(small));
	assert_string_equal(small, "0/2 tunnels up; primary: connecting; ...");
	s.tunnels[0].state = s.tunnels[1].state = TUNNEL_UP;
	s.tunnels[1].health = HEALTH_OK;
	status_format_summary(&s, buf, sizeof(buf));
	assert_string_equal(buf, "2/2 tunnels up");
	/* Up is not all: a tunnel whose target or RTT is not ok says so. */
	s.tunnels[0].health = HEALTH_TARGET_DOWN;
	s.tunnels[0].forwards[0].target_state = TARGET_UNREACHABLE;
	snprintf(s.tunnels[0].forwards[0].target_error,
		 sizeof(s.tunnels[0].forwards[0].target_error),
		 "connect failed: Connection refused");
	s.tunnels[1].health = HEALTH_DEGRADED;
	s.tunnels[1].rtt = 1.234;
	status_format_summary(&s, buf, sizeof(buf));
	assert_string_equal(
	    buf, "2/2 tunnels up; primary: target pg_main:5432 unreachable "
		 "(connect failed: Connection refused); replica: degraded (rtt 1234 ms)");
	status_format_summary(&s, buf, 0);
	status_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_state_names),
	    cmocka_unit_test(test_status_free),
	    cmocka_unit_test(test_json_exact),
	    cmocka_unit_test(test_json_empty_and_big_numbers),
	    cmocka_unit_test(test_json_escaping),
	    cmocka_unit_test(test_json_unterminated_field),
	    cmocka_unit_test(test_age),
	    cmocka_unit_test(test_table_exact),
	    cmocka_unit_test(test_via),
	    cmocka_unit_test(test_table_sanitizes),
	    cmocka_unit_test(test_table_empty_and_future),
	    cmocka_unit_test(test_stream_error),
	    cmocka_unit_test(test_metrics_exact),
	    cmocka_unit_test(test_metrics_lint),
	    cmocka_unit_test(test_metrics_promtool),
	    cmocka_unit_test(test_metrics_alerts),
	    cmocka_unit_test(test_metrics_textfile_state),
	    cmocka_unit_test(test_summary),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
