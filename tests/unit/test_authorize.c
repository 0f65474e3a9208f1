#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "authorize.h"
#include "fwdspec.h"
#include "jumpspec.h"

#define KEY	  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJ96vhnJlPDT"
#define JUMP_KEY  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOaSbidxJYrAX"
#define NOLOGIN	  ",command=\"/usr/sbin/nologin\""
#define NO_LISTEN ",permitlisten=\"NONE.INVALID:1\""

/* A tunnel as config.c would load it: forwards in ssh syntax, "L ..." or "R ...". */
struct fake_tunnel {
	struct tunnel_config cfg;
	struct forward_spec forwards[8];
	struct jump_hop hops[JUMP_HOPS_MAX];
};

static struct fake_tunnel *fake(const char *name, const char *host, uint16_t port,
				const char *const *forwards, const struct jump_hop *hops,
				size_t n_hops)
{
	struct fake_tunnel *t = calloc(1, sizeof(*t));
	char err[128];

	assert_non_null(t);
	t->cfg.name = (char *)name;
	t->cfg.host = (char *)host;
	t->cfg.port = port;
	t->cfg.user = (char *)"moletun";
	for (size_t i = 0; forwards && forwards[i]; i++) {
		enum forward_kind kind = forwards[i][0] == 'R' ? FORWARD_REMOTE : FORWARD_LOCAL;

		if (fwdspec_parse(kind, forwards[i] + 2, &t->forwards[i], err, sizeof(err)) != 0)
			fail_msg("forward '%s': %s", forwards[i], err);
		t->cfg.n_forwards++;
	}
	t->cfg.forwards = t->forwards;
	for (size_t i = 0; i < n_hops; i++)
		t->hops[i] = hops[i];
	t->cfg.jump_hops = n_hops ? t->hops : NULL;
	t->cfg.n_jump_hops = n_hops;
	return t;
}

/* The one line `forwards` give for a direct tunnel, with `from`. */
static char *line_of(const char *const *forwards, const char *from)
{
	struct fake_tunnel *t = fake("db", "10.0.0.5", 22, forwards, NULL, 0);
	struct authorize_set set = {0};
	char *line = NULL, err[256] = "";

	assert_int_equal(authorize_set_add_tunnel(&set, &t->cfg, KEY, NULL), 0);
	assert_int_equal(set.n, 1);
	if (authorize_format(&set.lines[0], from, "web1", &line, err, sizeof(err)) != 0)
		fail_msg("format failed: %s", err);
	authorize_set_free(&set);
	free(t);
	return line;
}

static void test_lines(void **state)
{
	static const struct {
		const char *forwards[4];
		const char *from;
		const char *line;
	} cases[] = {
	    {{"L 127.0.0.1:5433 pg_main:5432"},
	     NULL,
	     "restrict,port-forwarding,permitopen=\"pg_main:5432\"" NO_LISTEN NOLOGIN " " KEY
	     " moletun@web1:db"},
	    /* IPv6 in brackets, as OpenSSH's permitopen wants them */
	    {{"L 5433 [fd00::1]:5432", "L [::1]:5434 pg_main:5432"},
	     NULL,
	     "restrict,port-forwarding,permitopen=\"[fd00::1]:5432\",permitopen=\"pg_main:"
	     "5432\"" NO_LISTEN NOLOGIN " " KEY " moletun@web1:db"},
	    /* the same target twice is permitted once */
	    {{"L 5433 pg_main:5432", "L 5434 pg_main:5432", "L 5435 pg_main:5433"},
	     NULL,
	     "restrict,port-forwarding,permitopen=\"pg_main:5432\",permitopen=\"pg_main:"
	     "5433\"" NO_LISTEN NOLOGIN " " KEY " moletun@web1:db"},
	    /* remote forwards only: no local forward may open anything real; the listen
	     * host lowercased, as sshd lowercases the request before matching */
	    {{"R LocalHost:6000 127.0.0.1:6000", "R [::1]:6001 127.0.0.1:6001"},
	     NULL,
	     "restrict,port-forwarding,permitopen=\"none.invalid:1\",permitlisten=\"localhost:"
	     "6000\",permitlisten=\"[::1]:6001\"" NOLOGIN " " KEY " moletun@web1:db"},
	    {{"L 5433 pg_main:5432", "R 6000 127.0.0.1:6000"},
	     "10.1.0.0/16,!10.1.0.9",
	     "restrict,port-forwarding,permitopen=\"pg_main:5432\",permitlisten=\"127.0.0.1:"
	     "6000\"" NOLOGIN ",from=\"10.1.0.0/16,!10.1.0.9\" " KEY " moletun@web1:db"},
	    /* no forward at all: no forwarding */
	    {{NULL}, NULL, "restrict" NOLOGIN " " KEY " moletun@web1:db"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *line = line_of(cases[i].forwards, cases[i].from);

		if (strcmp(line, cases[i].line) != 0)
			fail_msg("case %zu:\n got  %s\n want %s", i, line, cases[i].line);
		free(line);
	}
}

static void test_quote(void **state)
{
	static const struct {
		const char *value;
		int r;
		const char *quoted;
	} cases[] = {
	    {"pg_main:5432", 0, "\"pg_main:5432\""},
	    {"", 0, "\"\""},
	    /* sshd's opt_dequote() knows one escape: \" */
	    {"a\"b", 0, "\"a\\\"b\""},
	    {"a\\b", 0, "\"a\\b\""},
	    {"a\\\"b", 0, "\"a\\\\\"b\""},
	    {"with space", 0, "\"with space\""},
	    /* would escape the closing quote */
	    {"trailing\\", -EINVAL, NULL},
	    {"new\nline", -EINVAL, NULL},
	    {"tab\there", -EINVAL, NULL},
	    {"del\x7f", -EINVAL, NULL},
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = authorize_quote(cases[i].value, buf, sizeof(buf));

		if (r != cases[i].r)
			fail_msg("case %zu ('%s'): %d", i, cases[i].value, r);
		if (r == 0)
			assert_string_equal(buf, cases[i].quoted);
	}
	/* room for the quotes and the NUL, exactly */
	assert_int_equal(authorize_quote("abcdef", buf, 9), 0);
	assert_int_equal(authorize_quote("abcdefg", buf, 9), -ENOSPC);
	assert_int_equal(authorize_quote("\"\"\"", buf, 9), 0);
	assert_string_equal(buf, "\"\\\"\\\"\\\"\"");
	assert_int_equal(authorize_quote("\"\"\"\"", buf, 9), -ENOSPC);
}

/* What cannot be quoted is refused with the option's name, not written half-way. */
static void test_unquotable_target(void **state)
{
	struct authorize_dest bad = {.host = (char *)"pg\x01", .port = 5432};
	struct authorize_line line = {
	    .public_key = (char *)KEY,
	    .tunnels = (char *)"db",
	    .opens = &bad,
	    .n_opens = 1,
	};
	char *out = (char *)"untouched", err[256] = "";

	(void)state;
	assert_int_equal(authorize_format(&line, NULL, "web1", &out, err, sizeof(err)), -EINVAL);
	assert_string_equal(out, "untouched");
	assert_non_null(strstr(err, "permitopen"));
}

static void test_from(void **state)
{
	static const char *const good[] = {"192.0.2.7", "10.0.0.0/8,!10.0.0.5", "*.example.com",
					   "fd00::/8,web?.example.com", "fe80::1%eth0"};
	static const char *const bad[] = {"", ",", "a,,b", "a,", "!", "a b", "a\"b", "a\nb"};
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (authorize_check_from(good[i], err, sizeof(err)) != 0)
			fail_msg("'%s' refused: %s", good[i], err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (authorize_check_from(bad[i], err, sizeof(err)) != -EINVAL)
			fail_msg("'%s' accepted", bad[i]);
		assert_true(strncmp(err, "--from: ", 8) == 0);
	}
}

/* sshd uses the first line that matches a key: tunnels sharing a key and a sidecar get
 * one line with all their targets; another key or server gets its own. */
static void test_merge(void **state)
{
	static const char *const db[] = {"L 5433 pg_main:5432", "R 6000 127.0.0.1:6000", NULL};
	static const char *const replica[] = {"L 5434 pg_replica:5432", "L 5435 pg_main:5432",
					      NULL};
	struct fake_tunnel *a = fake("db", "10.0.0.5", 22, db, NULL, 0);
	struct fake_tunnel *b = fake("replica", "10.0.0.5", 22, replica, NULL, 0);
	struct fake_tunnel *c = fake("other", "10.0.0.5", 2222, replica, NULL, 0);
	struct authorize_set set = {0};
	char *line, err[256];

	(void)state;
	assert_int_equal(authorize_set_add_tunnel(&set, &a->cfg, KEY, NULL), 0);
	assert_int_equal(authorize_set_add_tunnel(&set, &b->cfg, KEY, NULL), 0);
	assert_int_equal(authorize_set_add_tunnel(&set, &b->cfg, JUMP_KEY, NULL), 0);
	assert_int_equal(authorize_set_add_tunnel(&set, &c->cfg, KEY, NULL), 0);
	assert_int_equal(set.n, 3);
	assert_int_equal(authorize_format(&set.lines[0], NULL, "web1", &line, err, sizeof(err)), 0);
	assert_string_equal(line,
			    "restrict,port-forwarding,permitopen=\"pg_main:5432\","
			    "permitopen=\"pg_replica:5432\",permitlisten=\"127.0.0.1:6000\"" NOLOGIN
			    " " KEY " moletun@web1:db,replica");
	free(line);
	assert_string_equal(set.lines[0].roles, "sidecar of tunnel db, sidecar of tunnel replica");
	assert_string_equal(set.lines[1].public_key, JUMP_KEY);
	assert_int_equal(set.lines[2].server_port, 2222);
	authorize_set_free(&set);
	free(a);
	free(b);
	free(c);
}

/* Each bastion may open only the way to the next hop; from= only where the node itself
 * connects. */
static void test_proxy_jump(void **state)
{
	static const char *const fwd[] = {"L 5433 pg_far:5432", NULL};
	const struct jump_hop hops[] = {
	    {.user = (char *)"jump", .host = (char *)"bastion1", .port = 22},
	    {.user = NULL, .host = (char *)"fd00::7", .port = 2200},
	};
	struct fake_tunnel *t = fake("far", "10.9.0.5", 2222, fwd, hops, 2);
	struct authorize_set set = {0};
	char *line, label[512], err[256];

	(void)state;
	assert_int_equal(authorize_set_add_tunnel(&set, &t->cfg, KEY, JUMP_KEY), 0);
	assert_int_equal(set.n, 3);
	assert_int_equal(
	    authorize_format(&set.lines[0], "192.0.2.7", "web1", &line, err, sizeof(err)), 0);
	assert_string_equal(
	    line, "restrict,port-forwarding,permitopen=\"[fd00::7]:2200\"" NO_LISTEN NOLOGIN
		  ",from=\"192.0.2.7\" " JUMP_KEY " moletun@web1:far");
	free(line);
	authorize_format_label(&set.lines[0], true, label, sizeof(label));
	assert_string_equal(label, "# jump@bastion1:22: bastion 1 of tunnel far");
	/* the second bastion: the tunnel's user, reached from the first bastion */
	assert_int_equal(
	    authorize_format(&set.lines[1], "192.0.2.7", "web1", &line, err, sizeof(err)), 0);
	assert_string_equal(
	    line, "restrict,port-forwarding,permitopen=\"10.9.0.5:2222\"" NO_LISTEN NOLOGIN
		  " " JUMP_KEY " moletun@web1:far");
	free(line);
	authorize_format_label(&set.lines[1], true, label, sizeof(label));
	assert_string_equal(label, "# moletun@[fd00::7]:2200: bastion 2 of tunnel far (no from=: "
				   "connections to it come from the bastion before it)");
	authorize_format_label(&set.lines[1], false, label, sizeof(label));
	assert_string_equal(label, "# moletun@[fd00::7]:2200: bastion 2 of tunnel far");
	assert_int_equal(authorize_format(&set.lines[2], NULL, "web1", &line, err, sizeof(err)), 0);
	assert_string_equal(line,
			    "restrict,port-forwarding,permitopen=\"pg_far:5432\"" NO_LISTEN NOLOGIN
			    " " KEY " moletun@web1:far");
	free(line);
	authorize_set_free(&set);
	free(t);
}

/* A tunnel that reaches a server directly and another that reaches it through a bastion
 * share one line: from= would lock one of them out, so it is left off. */
static void test_mixed_first_hop(void **state)
{
	static const char *const fwd[] = {"L 5433 pg:5432", NULL};
	const struct jump_hop hop = {.host = (char *)"10.0.0.5", .port = 22};
	struct fake_tunnel *direct = fake("a", "10.0.0.5", 22, fwd, NULL, 0);
	struct fake_tunnel *via = fake("b", "10.0.0.6", 22, fwd, &hop, 1);
	struct fake_tunnel *via2 = fake("c", "10.0.0.5", 22, fwd, &hop, 1);
	struct authorize_set set = {0};
	char *line, err[256];

	(void)state;
	assert_int_equal(authorize_set_add_tunnel(&set, &direct->cfg, KEY, NULL), 0);
	assert_int_equal(authorize_set_add_tunnel(&set, &via->cfg, KEY, NULL), 0);
	assert_int_equal(set.n, 2);
	/* 10.0.0.5 is a's sidecar and b's bastion, reached directly by both */
	assert_true(set.lines[0].first_hop);
	assert_int_equal(set.lines[0].n_opens, 2);
	assert_string_equal(set.lines[0].roles, "sidecar of tunnel a, bastion of tunnel b");
	assert_string_equal(set.lines[0].tunnels, "a,b");
	/* c reaches it through itself as a bastion: not directly any more */
	assert_int_equal(authorize_set_add_tunnel(&set, &via2->cfg, KEY, NULL), 0);
	assert_false(set.lines[0].first_hop);
	assert_int_equal(
	    authorize_format(&set.lines[0], "192.0.2.7", "web1", &line, err, sizeof(err)), 0);
	assert_null(strstr(line, "from="));
	free(line);
	authorize_set_free(&set);
	free(direct);
	free(via);
	free(via2);
}

static void test_comment_stays_one_field(void **state)
{
	static const char *const fwd[] = {"L 5433 pg:5432", NULL};
	struct fake_tunnel *t = fake("db", "10.0.0.5", 22, fwd, NULL, 0);
	struct authorize_set set = {0};
	char *line, err[256];

	(void)state;
	assert_int_equal(authorize_set_add_tunnel(&set, &t->cfg, KEY, NULL), 0);
	assert_int_equal(authorize_format(&set.lines[0], NULL, "web 1\n", &line, err, sizeof(err)),
			 0);
	assert_non_null(strstr(line, " moletun@web_1_:db"));
	assert_null(strchr(line, '\n'));
	free(line);
	authorize_set_free(&set);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lines),
	    cmocka_unit_test(test_quote),
	    cmocka_unit_test(test_unquotable_target),
	    cmocka_unit_test(test_from),
	    cmocka_unit_test(test_merge),
	    cmocka_unit_test(test_proxy_jump),
	    cmocka_unit_test(test_mixed_first_hop),
	    cmocka_unit_test(test_comment_stays_one_field),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
