#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "fwdspec.h"

/* config_load_buffer(), the fuzzer's entry point, and inputs the fuzzer found. */

#define VALID                                                                                      \
	"[tunnel:a]\n"                                                                             \
	"host = db.example.com\n"                                                                  \
	"user = tunnel\n"                                                                          \
	"use_agent = yes\n"                                                                        \
	"strict_host_key_checking = no\n"                                                          \
	"local_forward = 5433 pg:5432"

static int load(const char *text, size_t len, bool includes, struct config **c, struct diag *d)
{
	diag_init(d);
	*c = NULL;
	return config_load_buffer("/nonexistent/test.conf", text, len, includes, c, d);
}

static bool has_message(const struct diag *d, const char *needle)
{
	for (size_t i = 0; i < d->count; i++)
		if (strstr(d->messages[i], needle))
			return true;
	return false;
}

static void test_valid_without_final_newline(void **state)
{
	struct config *c;
	struct diag d;

	assert_int_equal(load(VALID, strlen(VALID), false, &c, &d), 0);
	assert_non_null(c);
	assert_int_equal(d.count, 0);
	assert_string_equal(c->path, "/nonexistent/test.conf");
	assert_int_equal(c->n_tunnels, 1);
	assert_int_equal(c->tunnels[0].n_forwards, 1);
	assert_int_equal(c->tunnels[0].forwards[0].target_port, 5432);
	config_free(c);
	diag_finish(&d);
}

static void test_empty(void **state)
{
	struct config *c;
	struct diag d;

	assert_int_equal(load(NULL, 0, false, &c, &d), 0);
	assert_int_equal(c->n_tunnels, 0);
	config_free(c);
	diag_finish(&d);
}

static void test_includes_disabled(void **state)
{
	static const char text[] = VALID "\n[include]\nfiles = *.conf\n";
	struct config *c;
	struct diag d;

	assert_int_equal(load(text, strlen(text), false, &c, &d), -EINVAL);
	assert_null(c);
	assert_int_equal(d.count, 1);
	assert_string_equal(d.messages[0],
			    "/nonexistent/test.conf:8: includes are not allowed here");
	diag_finish(&d);

	/* allowed: the glob is taken from the buffer's directory, where nothing matches */
	assert_int_equal(load(text, strlen(text), true, &c, &d), 0);
	config_free(c);
	diag_finish(&d);
}

static void test_nul_byte_and_line_numbers(void **state)
{
	static const char text[] = "[moletun]\nlog_level = info\x00x\n\nbogus\n";
	struct config *c;
	struct diag d;

	assert_int_equal(load(text, sizeof(text) - 1, false, &c, &d), -EINVAL);
	assert_int_equal(d.count, 2);
	assert_string_equal(d.messages[0], "/nonexistent/test.conf:2: line contains a NUL byte");
	assert_true(has_message(&d, "test.conf:4: expected 'key = value'"));
	diag_finish(&d);
}

/* Same diagnostics whether the text comes from a file or from memory. */
static void test_same_as_file(void **state)
{
	static const char text[] = "[tunnel:x]\nport = 0\nunknown = 1\n  indented = 2\n";
	char path[] = "/tmp/moletun-test-config-XXXXXX";
	struct config *c;
	struct diag from_file, from_buffer;
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	diag_init(&from_file);
	assert_int_equal(config_load(path, &c, &from_file), -EINVAL);
	diag_init(&from_buffer);
	assert_int_equal(config_load_buffer(path, text, strlen(text), true, &c, &from_buffer),
			 -EINVAL);
	unlink(path);
	assert_int_equal(from_file.count, from_buffer.count);
	for (size_t i = 0; i < from_file.count; i++)
		assert_string_equal(from_file.messages[i], from_buffer.messages[i]);
	diag_finish(&from_file);
	diag_finish(&from_buffer);
}

/* fuzz_config: a tunnel without host and two remote forwards on one port crashed the
 * listen-conflict check (strcmp on the missing host). */
static void test_remote_forwards_without_host(void **state)
{
	static const char text[] = "[tunnel:b]\nremote_forward=9000 1:9\nremote_forward=9000 1:9\n";
	struct config *c;
	struct diag d;

	assert_int_equal(load(text, strlen(text), false, &c, &d), -EINVAL);
	assert_true(has_message(&d, "missing required key 'host'"));
	diag_finish(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_without_final_newline),
	    cmocka_unit_test(test_empty),
	    cmocka_unit_test(test_includes_disabled),
	    cmocka_unit_test(test_nul_byte_and_line_numbers),
	    cmocka_unit_test(test_same_as_file),
	    cmocka_unit_test(test_remote_forwards_without_host),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
