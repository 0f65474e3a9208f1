#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "fwdspec.h"

static struct forward_spec parse_ok(enum forward_kind kind, const char *text)
{
	struct forward_spec f;
	char err[128] = "";

	memset(&f, 0xaa, sizeof(f));
	if (fwdspec_parse(kind, text, &f, err, sizeof(err)) != 0)
		fail_msg("'%s' rejected: %s", text, err);
	assert_int_equal(f.kind, kind);
	return f;
}

/* Checks the reason and that *ret was not touched. */
static void assert_rejected(const char *text, const char *reason)
{
	struct forward_spec f;
	char err[128] = "";

	memset(&f, 0x5a, sizeof(f));
	assert_int_equal(fwdspec_parse(FORWARD_LOCAL, text, &f, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, reason);
	for (size_t i = 0; i < sizeof(f); i++)
		assert_int_equal(((unsigned char *)&f)[i], 0x5a);
}

static void test_local_basic(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_LOCAL, "127.0.0.1:5433 pg_main:5432");

	(void)state;
	assert_string_equal(f.listen_host, "127.0.0.1");
	assert_int_equal(f.listen_port, 5433);
	assert_string_equal(f.target_host, "pg_main");
	assert_int_equal(f.target_port, 5432);
}

static void test_remote_basic(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_REMOTE, "127.0.0.1:9000 127.0.0.1:9000");

	(void)state;
	assert_string_equal(f.listen_host, "127.0.0.1");
	assert_int_equal(f.listen_port, 9000);
	assert_string_equal(f.target_host, "127.0.0.1");
	assert_int_equal(f.target_port, 9000);
}

static void test_default_bind_is_loopback(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_LOCAL, "5433 db.internal:5432");

	(void)state;
	assert_string_equal(f.listen_host, "127.0.0.1");
	assert_int_equal(f.listen_port, 5433);
	f = parse_ok(FORWARD_REMOTE, "9000 localhost:80");
	assert_string_equal(f.listen_host, "127.0.0.1");
}

static void test_all_addresses(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_LOCAL, "*:5433 db:5432");

	(void)state;
	assert_string_equal(f.listen_host, "0.0.0.0");
	f = parse_ok(FORWARD_LOCAL, ":5433 db:5432");
	assert_string_equal(f.listen_host, "0.0.0.0");
	assert_int_equal(f.listen_port, 5433);
	f = parse_ok(FORWARD_LOCAL, "0.0.0.0:5433 db:5432");
	assert_string_equal(f.listen_host, "0.0.0.0");
}

static void test_ipv6(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_LOCAL, "[::1]:5433 [fd00::5]:5432");

	(void)state;
	assert_string_equal(f.listen_host, "::1");
	assert_int_equal(f.listen_port, 5433);
	assert_string_equal(f.target_host, "fd00::5");
	assert_int_equal(f.target_port, 5432);
	f = parse_ok(FORWARD_LOCAL, "[::]:5433 [fe80::1%eth0]:22");
	assert_string_equal(f.listen_host, "::");
	assert_string_equal(f.target_host, "fe80::1%eth0");
	f = parse_ok(FORWARD_LOCAL, "[::ffff:127.0.0.1]:5433 db:5432");
	assert_string_equal(f.listen_host, "::ffff:127.0.0.1");
}

static void test_whitespace(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_LOCAL, "  5433 \t\t db:5432  ");

	(void)state;
	assert_int_equal(f.listen_port, 5433);
	assert_string_equal(f.target_host, "db");
}

static void test_ports(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_LOCAL, "1 db:65535");

	(void)state;
	assert_int_equal(f.listen_port, 1);
	assert_int_equal(f.target_port, 65535);
	assert_rejected("0 db:5432", "invalid listen port '0' (1..65535)");
	assert_rejected("65536 db:5432", "invalid listen port '65536' (1..65535)");
	assert_rejected("127.0.0.1:5433 db:0", "invalid target port '0' (1..65535)");
	assert_rejected("127.0.0.1:5433 db:65536", "invalid target port '65536' (1..65535)");
	assert_rejected("127.0.0.1:5433 db:100000", "invalid target port '100000' (1..65535)");
	assert_rejected("127.0.0.1:pg db:5432", "invalid listen port 'pg' (1..65535)");
	assert_rejected("127.0.0.1:-1 db:5432", "invalid listen port '-1' (1..65535)");
	assert_rejected("127.0.0.1:+80 db:5432", "invalid listen port '+80' (1..65535)");
}

static void test_missing_parts(void **state)
{
	(void)state;
	assert_rejected("", "empty forward");
	assert_rejected("   ", "empty forward");
	assert_rejected("127.0.0.1:5433", "missing target (expected '[bind:]port host:port')");
	assert_rejected("127.0.0.1:5433 pg_main", "missing target port (expected host:port)");
	assert_rejected("127.0.0.1:5433 pg_main:", "missing target port");
	assert_rejected("127.0.0.1: pg_main:5432", "missing listen port");
	assert_rejected("127.0.0.1:5433 :5432", "missing target host");
	assert_rejected("[::1] db:5432", "missing listen port");
	assert_rejected("[::1]: db:5432", "missing listen port");
	assert_rejected("5433 [fd00::5]", "missing target port");
}

static void test_bad_addresses(void **state)
{
	(void)state;
	assert_rejected("::1:5433 db:5432", "IPv6 listen address needs brackets, e.g. [::1]:5433");
	assert_rejected("5433 fd00::5:5432", "IPv6 target address needs brackets, e.g. [::1]:5433");
	assert_rejected("[::1:5433 db:5432", "missing ']' in listen address");
	assert_rejected("[::1]5433 db:5432", "expected ':' after ']' in listen address");
	assert_rejected("[localhost]:5433 db:5432", "invalid IPv6 listen address 'localhost'");
	assert_rejected("5433 [1.2.3.4]:5432", "invalid IPv6 target address '1.2.3.4'");
	assert_rejected("5433 d/b:5432", "invalid target host 'd/b'");
	assert_rejected("5433 *:5432", "invalid target host '*'");
	assert_rejected("5433 db:5432 extra", "unexpected text after target");
}

static void test_long_host(void **state)
{
	char text[600], host[300];
	struct forward_spec f;

	(void)state;
	memset(host, 'a', 255);
	host[255] = '\0';
	snprintf(text, sizeof(text), "5433 %s:5432", host);
	f = parse_ok(FORWARD_LOCAL, text);
	assert_int_equal(strlen(f.target_host), 255);
	memset(host, 'a', 256);
	host[256] = '\0';
	snprintf(text, sizeof(text), "5433 %s:5432", host);
	assert_rejected(text, "target host too long (max 255 characters)");
	memset(host, 'a', 299);
	host[299] = '\0';
	snprintf(text, sizeof(text), "5433 %s:5432", host);
	assert_rejected(text, "address too long");
}

static void test_err_optional(void **state)
{
	struct forward_spec f;

	(void)state;
	assert_int_equal(fwdspec_parse(FORWARD_LOCAL, "nonsense", &f, NULL, 0), -EINVAL);
	assert_int_equal(fwdspec_parse(FORWARD_LOCAL, "5433 db:5432", &f, NULL, 0), 0);
}

static void test_format(void **state)
{
	struct forward_spec f = parse_ok(FORWARD_LOCAL, "127.0.0.1:5433 pg_main:5432");
	char buf[300];

	(void)state;
	fwdspec_format_listen(&f, buf, sizeof(buf));
	assert_string_equal(buf, "127.0.0.1:5433");
	fwdspec_format_target(&f, buf, sizeof(buf));
	assert_string_equal(buf, "pg_main:5432");
	f = parse_ok(FORWARD_LOCAL, "[::1]:5433 [fd00::5]:5432");
	fwdspec_format_listen(&f, buf, sizeof(buf));
	assert_string_equal(buf, "[::1]:5433");
	fwdspec_format_target(&f, buf, sizeof(buf));
	assert_string_equal(buf, "[fd00::5]:5432");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_local_basic),
	    cmocka_unit_test(test_remote_basic),
	    cmocka_unit_test(test_default_bind_is_loopback),
	    cmocka_unit_test(test_all_addresses),
	    cmocka_unit_test(test_ipv6),
	    cmocka_unit_test(test_whitespace),
	    cmocka_unit_test(test_ports),
	    cmocka_unit_test(test_missing_parts),
	    cmocka_unit_test(test_bad_addresses),
	    cmocka_unit_test(test_long_host),
	    cmocka_unit_test(test_err_optional),
	    cmocka_unit_test(test_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
