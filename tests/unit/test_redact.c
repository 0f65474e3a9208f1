#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "redact.h"

static void assert_redacted(const char *url, const char *want)
{
	char buf[128];

	url_redact(url, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

static void test_no_userinfo(void **state)
{
	(void)state;
	assert_redacted("https://hooks.slack.com/services/T0/B0/SECRET",
			"https://hooks.slack.com/...");
	assert_redacted("https://am.example.com", "https://am.example.com");
	assert_redacted("http://127.0.0.1:9093", "http://127.0.0.1:9093");
	assert_redacted("https://h.example?token=SECRET", "https://h.example/...");
	assert_redacted("https://h.example#SECRET", "https://h.example/...");
	assert_redacted("no scheme", "(url)");
	assert_redacted("", "(url)");
}

/* Everything up to the last '@' of the authority is userinfo, whichever part holds '@'. */
static void test_at_in_userinfo(void **state)
{
	(void)state;
	assert_redacted("http://user:SECRET@127.0.0.1:8080/hook", "http://127.0.0.1:8080/...");
	assert_redacted("http://user:p@ss@127.0.0.1:8080/hook?token=SECRET",
			"http://127.0.0.1:8080/...");
	assert_redacted("http://us@er:SE@CR@ET@hooks.example.com/x",
			"http://hooks.example.com/...");
	assert_redacted("https://user@host.example", "https://host.example");
	assert_redacted("https://:SECRET@host.example", "https://host.example");
	assert_redacted("https://SECRET@@host.example", "https://host.example");
}

/* An '@' after the authority belongs to the path or query: the host is not taken from it. */
static void test_at_in_path_or_query(void **state)
{
	(void)state;
	assert_redacted("https://host.example/p@th/SECRET", "https://host.example/...");
	assert_redacted("https://host.example?to=a@b.example&t=SECRET", "https://host.example/...");
	assert_redacted("https://u:SECRET@host.example/a@b?c=d@e", "https://host.example/...");
	assert_redacted("https://host.example#x@y", "https://host.example/...");
}

static void test_ipv6(void **state)
{
	(void)state;
	assert_redacted("http://[::1]:9093?x=1", "http://[::1]:9093/...");
	assert_redacted("http://u:p@ss@[2001:db8::1]:443/x", "http://[2001:db8::1]:443/...");
	assert_redacted("http://[fe80::1]", "http://[fe80::1]");
}

/*
 * What is left once userinfo is dropped must look like a host: a '/', '?' or '#' inside a
 * password ends the authority early, and the piece before it is part of the password.
 */
static void test_not_a_host(void **state)
{
	(void)state;
	assert_redacted("http://user:SE/CRET@host.example/", "http://(redacted)/...");
	assert_redacted("http://user:SE?CRET@host.example", "http://(redacted)/...");
	assert_redacted("http://user:SE#CRET@host.example", "http://(redacted)/...");
	assert_redacted("http://host:SECRET/x", "http://(redacted)/...");
	assert_redacted("http://[::1]SECRET", "http://(redacted)");
	assert_redacted("http://host:123456", "http://(redacted)");
	assert_redacted("http://", "http://(redacted)");
	assert_redacted("http://@", "http://(redacted)");
}

/* A short buffer truncates, it never overflows. */
static void test_truncates(void **state)
{
	char buf[12];

	(void)state;
	memset(buf, 'x', sizeof(buf));
	url_redact("https://hooks.example.com/x", buf, sizeof(buf));
	assert_string_equal(buf, "https://hoo");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_userinfo),		cmocka_unit_test(test_at_in_userinfo),
	    cmocka_unit_test(test_at_in_path_or_query), cmocka_unit_test(test_ipv6),
	    cmocka_unit_test(test_not_a_host),		cmocka_unit_test(test_truncates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
