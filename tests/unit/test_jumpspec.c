#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jumpspec.h"

struct parsed {
	struct jump_hop *hops;
	size_t n;
};

static struct parsed parse_ok(const char *text)
{
	struct parsed p = {(struct jump_hop *)1, 99};
	char err[128] = "";

	if (jumpspec_parse(text, &p.hops, &p.n, err, sizeof(err)) != 0)
		fail_msg("'%s' rejected: %s", text, err);
	return p;
}

/* Checks the code and reason, and that the outputs were not touched. */
static void assert_rejected(const char *text, int code, const char *reason)
{
	struct jump_hop *hops = (struct jump_hop *)1;
	size_t n = 99;
	char err[128] = "";

	assert_int_equal(jumpspec_parse(text, &hops, &n, err, sizeof(err)), code);
	assert_string_equal(err, reason);
	assert_ptr_equal(hops, (struct jump_hop *)1);
	assert_int_equal(n, 99);
}

static void assert_hop(const struct jump_hop *h, const char *user, const char *host, uint16_t port)
{
	if (user)
		assert_string_equal(h->user, user);
	else
		assert_null(h->user);
	assert_string_equal(h->host, host);
	assert_int_equal(h->port, port);
}

static void test_one_hop_defaults(void **state)
{
	struct parsed p = parse_ok("bastion.example.com");

	(void)state;
	assert_int_equal(p.n, 1);
	assert_hop(&p.hops[0], NULL, "bastion.example.com", 22);
	jumpspec_free(p.hops, p.n);
}

static void test_user_and_port(void **state)
{
	struct parsed p = parse_ok("ops@10.0.0.1:2222");

	(void)state;
	assert_int_equal(p.n, 1);
	assert_hop(&p.hops[0], "ops", "10.0.0.1", 2222);
	jumpspec_free(p.hops, p.n);
}

/* what `ssh -G` prints for a ProxyJump to an IPv4 address */
static void test_bracketed_ipv4(void **state)
{
	struct parsed p = parse_ok("ops@[10.0.0.1],[10.0.0.2]:2222");
	char buf[128];

	(void)state;
	assert_int_equal(p.n, 2);
	assert_hop(&p.hops[0], "ops", "10.0.0.1", 22);
	assert_hop(&p.hops[1], NULL, "10.0.0.2", 2222);
	jumpspec_format_hop(&p.hops[1], buf, sizeof(buf));
	assert_string_equal(buf, "10.0.0.2:2222");
	jumpspec_free(p.hops, p.n);
}

static void test_chain_in_order(void **state)
{
	struct parsed p = parse_ok("a@first:2201,second, c@[fd00::1]:2203 ,[::1]");

	(void)state;
	assert_int_equal(p.n, 4);
	assert_hop(&p.hops[0], "a", "first", 2201);
	assert_hop(&p.hops[1], NULL, "second", 22);
	assert_hop(&p.hops[2], "c", "fd00::1", 2203);
	assert_hop(&p.hops[3], NULL, "::1", 22);
	jumpspec_free(p.hops, p.n);
}

static void test_last_at_ends_user(void **state)
{
	struct parsed p = parse_ok("first.last@corp@bastion");

	(void)state;
	assert_hop(&p.hops[0], "first.last@corp", "bastion", 22);
	jumpspec_free(p.hops, p.n);
}

static void test_none_and_empty(void **state)
{
	static const char *const direct[] = {"", "none", "  ", " none"};

	(void)state;
	for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++) {
		struct parsed p = parse_ok(direct[i]);

		assert_null(p.hops);
		assert_int_equal(p.n, 0);
	}
	jumpspec_free(NULL, 0);
}

static void test_max_hops(void **state)
{
	struct parsed p = parse_ok("h1,h2,h3,h4,h5,h6,h7,h8");

	(void)state;
	assert_int_equal(p.n, JUMP_HOPS_MAX);
	assert_hop(&p.hops[7], NULL, "h8", 22);
	jumpspec_free(p.hops, p.n);
	assert_rejected("h1,h2,h3,h4,h5,h6,h7,h8,h9", -E2BIG, "too many hops (max 8)");
}

static void test_rejects(void **state)
{
	(void)state;
	assert_rejected("bastion:0", -EINVAL, "hop 1: invalid port '0' (1..65535)");
	assert_rejected("bastion:65536", -EINVAL, "hop 1: invalid port '65536' (1..65535)");
	assert_rejected("bastion:", -EINVAL, "hop 1: invalid port '' (1..65535)");
	assert_rejected("bastion:22x", -EINVAL, "hop 1: invalid port '22x' (1..65535)");
	assert_rejected("a,bad!host", -EINVAL, "hop 2: invalid host 'bad!host'");
	assert_rejected("a,,b", -EINVAL, "hop 2 is empty");
	assert_rejected("a,", -EINVAL, "hop 2 is empty");
	assert_rejected(",a", -EINVAL, "hop 1 is empty");
	assert_rejected("@bastion", -EINVAL, "hop 1: empty user before '@'");
	assert_rejected("ops@", -EINVAL, "hop 1: missing host");
	assert_rejected(":22", -EINVAL, "hop 1: missing host");
	assert_rejected("fd00::1", -EINVAL,
			"hop 1: IPv6 address needs brackets, e.g. [fd00::1]:22");
	assert_rejected("[fd00::1", -EINVAL, "hop 1: missing ']' after IPv6 address");
	assert_rejected("[fd00::1]22", -EINVAL, "hop 1: expected ':' after ']'");
	assert_rejected("[bastion]:22", -EINVAL, "hop 1: invalid IP address 'bastion'");
	assert_rejected("[10.0.0]:22", -EINVAL, "hop 1: invalid IP address '10.0.0'");
	assert_rejected("o ps@bastion", -EINVAL, "hop 1: invalid user 'o ps'");
	assert_rejected("ssh://bastion", -EINVAL, "hop 1: invalid port '//bastion' (1..65535)");
	assert_rejected("bastion some", -EINVAL, "hop 1: invalid host 'bastion some'");
}

static void test_long_fields(void **state)
{
	char text[600];

	(void)state;
	memset(text, 'h', 256);
	text[256] = '\0';
	assert_rejected(text, -EINVAL, "hop 1: host too long (max 255 characters)");
	memset(text, 'u', 128);
	snprintf(text + 128, sizeof(text) - 128, "@bastion");
	assert_rejected(text, -EINVAL, "hop 1: user too long (max 127 characters)");
	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	assert_rejected(text, -EINVAL, "hop 1 is too long");
}

static void test_format_round_trip(void **state)
{
	static const char text[] = "a@first:2201,second:22,c@[fd00::1]:2203";
	struct parsed p = parse_ok(text), q;
	char buf[JUMP_HOPS_MAX * JUMP_HOP_TEXT_MAX], small[12];

	(void)state;
	jumpspec_format(p.hops, p.n, buf, sizeof(buf));
	assert_string_equal(buf, text);
	jumpspec_format_hop(&p.hops[2], buf, sizeof(buf));
	assert_string_equal(buf, "c@[fd00::1]:2203");
	jumpspec_format_hop(&p.hops[1], buf, sizeof(buf));
	assert_string_equal(buf, "second:22");
	/* cut, never overrun */
	jumpspec_format(p.hops, p.n, small, sizeof(small));
	assert_string_equal(small, "a@first:220");
	jumpspec_format(NULL, 0, buf, sizeof(buf));
	assert_string_equal(buf, "");
	q = parse_ok(buf);
	assert_int_equal(q.n, 0);
	jumpspec_free(p.hops, p.n);
}

static void test_equal(void **state)
{
	struct parsed a = parse_ok("ops@b1:22,b2"), b = parse_ok("ops@b1,b2:22");
	struct parsed c = parse_ok("ops@b1,b2:2222"), d = parse_ok("b1,b2"), e = parse_ok("ops@b1");

	(void)state;
	assert_true(jumpspec_equal(a.hops, a.n, b.hops, b.n));
	assert_false(jumpspec_equal(a.hops, a.n, c.hops, c.n));
	assert_false(jumpspec_equal(a.hops, a.n, d.hops, d.n));
	assert_false(jumpspec_equal(a.hops, a.n, e.hops, e.n));
	assert_true(jumpspec_equal(NULL, 0, NULL, 0));
	assert_false(jumpspec_equal(NULL, 0, e.hops, e.n));
	jumpspec_free(a.hops, a.n);
	jumpspec_free(b.hops, b.n);
	jumpspec_free(c.hops, c.n);
	jumpspec_free(d.hops, d.n);
	jumpspec_free(e.hops, e.n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_hop_defaults),  cmocka_unit_test(test_user_and_port),
	    cmocka_unit_test(test_bracketed_ipv4),
	    cmocka_unit_test(test_chain_in_order),    cmocka_unit_test(test_last_at_ends_user),
	    cmocka_unit_test(test_none_and_empty),    cmocka_unit_test(test_max_hops),
	    cmocka_unit_test(test_rejects),	      cmocka_unit_test(test_long_fields),
	    cmocka_unit_test(test_format_round_trip), cmocka_unit_test(test_equal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
