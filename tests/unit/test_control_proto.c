#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "control_proto.h"

static int parse(const char *line, struct control_request *ret, const char **ret_error)
{
	return control_request_parse(line, strlen(line), ret, ret_error);
}

static void test_scan(void **state)
{
	char big[CONTROL_REQUEST_MAX + 10];

	assert_int_equal(control_request_scan("status\n", 7), 6);
	assert_int_equal(control_request_scan("status\nmore", 11), 6);
	assert_int_equal(control_request_scan("stat", 4), -EAGAIN);
	assert_int_equal(control_request_scan("", 0), -EAGAIN);
	memset(big, 'x', sizeof(big));
	assert_int_equal(control_request_scan(big, CONTROL_REQUEST_MAX - 1), -EAGAIN);
	assert_int_equal(control_request_scan(big, CONTROL_REQUEST_MAX), -EMSGSIZE);
	/* The longest request: 1023 bytes and its LF. */
	big[CONTROL_REQUEST_MAX - 1] = '\n';
	assert_int_equal(control_request_scan(big, CONTROL_REQUEST_MAX), CONTROL_REQUEST_MAX - 1);
	/* An LF past the limit does not count. */
	big[CONTROL_REQUEST_MAX - 1] = 'x';
	big[CONTROL_REQUEST_MAX] = '\n';
	assert_int_equal(control_request_scan(big, sizeof(big)), -EMSGSIZE);
}

static void test_parse_valid(void **state)
{
	static const struct {
		const char *line;
		enum control_command command;
		bool json, all;
		const char *name;
	} cases[] = {
	    {"status", CONTROL_STATUS, false, false, ""},
	    {"status primary", CONTROL_STATUS, false, false, "primary"},
	    {"status --json", CONTROL_STATUS, true, false, ""},
	    {"status --json primary", CONTROL_STATUS, true, false, "primary"},
	    {"status primary --json", CONTROL_STATUS, true, false, "primary"},
	    {"  status\t primary  \r", CONTROL_STATUS, false, false, "primary"},
	    {"status caf\xc3\xa9", CONTROL_STATUS, false, false, "caf\xc3\xa9"},
	    {"metrics", CONTROL_METRICS, false, false, ""},
	    {"reconnect primary", CONTROL_RECONNECT, false, false, "primary"},
	    {"reconnect --all", CONTROL_RECONNECT, false, true, ""},
	    {"reload", CONTROL_RELOAD, false, false, ""},
	    {"reload\r", CONTROL_RELOAD, false, false, ""},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct control_request r;
		const char *error = "unset";

		assert_int_equal(parse(cases[i].line, &r, &error), 0);
		assert_null(error);
		assert_int_equal(r.command, cases[i].command);
		assert_int_equal(r.json, cases[i].json);
		assert_int_equal(r.all, cases[i].all);
		assert_string_equal(r.name, cases[i].name);
	}
}

static void test_parse_invalid(void **state)
{
	static const struct {
		const char *line;
		const char *error;
	} cases[] = {
	    {"", "empty request"},
	    {" \t ", "empty request"},
	    {"hello", "unknown command"},
	    {"STATUS", "unknown command"},
	    {"statusx", "unknown command"},
	    {"\x01\x02garbage", "unknown command"},
	    {"GET / HTTP/1.1", "unknown command"},
	    {"{\"command\":\"status\"}", "unknown command"},
	    {"status a b", "usage: status [--json] [NAME]"},
	    {"status --all", "usage: status [--json] [NAME]"},
	    {"status -j", "usage: status [--json] [NAME]"},
	    {"status na\x01me", "usage: status [--json] [NAME]"},
	    {"status na\x7fme", "usage: status [--json] [NAME]"},
	    {"metrics now", "usage: metrics"},
	    {"reconnect", "usage: reconnect NAME|--all"},
	    {"reconnect --all primary", "usage: reconnect NAME|--all"},
	    {"reconnect a b", "usage: reconnect NAME|--all"},
	    {"reconnect --json", "usage: reconnect NAME|--all"},
	    {"reload now", "usage: reload"},
	    {"reload --all", "usage: reload"},
	    {"status a b c d e f g h i j", "usage: status [--json] [NAME]"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct control_request r = {.name = "untouched"};
		const char *error = NULL;

		assert_int_equal(parse(cases[i].line, &r, &error), -EINVAL);
		assert_non_null(error);
		assert_string_equal(error, cases[i].error);
		assert_string_equal(r.name, "untouched");
	}
}

static void test_parse_name_limits(void **state)
{
	char line[CONTROL_REQUEST_MAX];
	struct control_request r;
	const char *error;

	/* CONTROL_NAME_MAX - 1 bytes fit, one more does not. */
	snprintf(line, sizeof(line), "status %0*d", CONTROL_NAME_MAX - 1, 0);
	assert_int_equal(parse(line, &r, &error), 0);
	assert_int_equal(strlen(r.name), CONTROL_NAME_MAX - 1);
	snprintf(line, sizeof(line), "status %0*d", CONTROL_NAME_MAX, 0);
	assert_int_equal(parse(line, &r, &error), -EINVAL);

	/* NUL bytes inside the line are garbage, not an early end. */
	assert_int_equal(control_request_parse("status\0x", 8, &r, &error), -EINVAL);
	assert_int_equal(control_request_parse("reload\0", 7, &r, &error), -EINVAL);
	assert_int_equal(control_request_parse("\0\0\0", 3, &r, &error), -EINVAL);
	assert_string_equal(error, "unknown command");
}

static void test_format_roundtrip(void **state)
{
	static const char *const lines[] = {
	    "status\n",	 "status --json\n",	"status primary\n",  "status --json a\n",
	    "metrics\n", "reconnect primary\n", "reconnect --all\n", "reload\n",
	};
	char buf[CONTROL_REQUEST_MAX], tiny[4];

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct control_request r;
		const char *error;

		assert_int_equal(control_request_parse(lines[i], strlen(lines[i]) - 1, &r, &error),
				 0);
		assert_int_equal(control_request_format(&r, buf, sizeof(buf)), 0);
		assert_string_equal(buf, lines[i]);
		assert_int_equal(control_request_format(&r, tiny, sizeof(tiny)), -ENOBUFS);
	}
}

static void test_mutates(void **state)
{
	assert_false(control_command_mutates(CONTROL_STATUS));
	assert_false(control_command_mutates(CONTROL_METRICS));
	assert_true(control_command_mutates(CONTROL_RECONNECT));
	assert_true(control_command_mutates(CONTROL_RELOAD));
	assert_false(control_command_mutates((enum control_command)99));
	assert_string_equal(control_command_str(CONTROL_RELOAD), "reload");
	assert_string_equal(control_command_str((enum control_command)99), "unknown");
}

static int header(const char *line, struct control_reply_header *h)
{
	return control_reply_header_parse(line, strlen(line), h);
}

static void test_reply_header(void **state)
{
	struct control_reply_header h;

	assert_int_equal(header("ok", &h), 0);
	assert_true(h.ok);
	assert_int_equal(h.tunnels, -1);
	assert_int_equal(h.up, -1);
	assert_string_equal(h.message, "");

	assert_int_equal(header("ok tunnels=3 up=2", &h), 0);
	assert_true(h.ok);
	assert_int_equal(h.tunnels, 3);
	assert_int_equal(h.up, 2);
	assert_int_equal(h.healthy, -1); /* a daemon that does not say */
	assert_int_equal(header("ok tunnels=3 up=3 healthy=2", &h), 0);
	assert_int_equal(h.up, 3);
	assert_int_equal(h.healthy, 2);

	/* Unknown keys are ignored; malformed values read as absent. */
	assert_int_equal(header("ok  future=x up=1 tunnels=-4 noeq\r", &h), 0);
	assert_int_equal(h.up, 1);
	assert_int_equal(h.tunnels, -1);
	assert_int_equal(header("ok tunnels=99999999999999999999999", &h), 0);
	assert_int_equal(h.tunnels, -1);

	assert_int_equal(header("error no such tunnel: x", &h), 0);
	assert_false(h.ok);
	assert_string_equal(h.message, "no such tunnel: x");
	assert_int_equal(header("error", &h), 0);
	assert_false(h.ok);
	assert_string_equal(h.message, "");
	assert_int_equal(header("error busy\r", &h), 0);
	assert_string_equal(h.message, "busy");

	h.ok = true;
	assert_int_equal(header("okay", &h), -EBADMSG);
	assert_int_equal(header("errors", &h), -EBADMSG);
	assert_int_equal(header("", &h), -EBADMSG);
	assert_int_equal(header("SSH-2.0-OpenSSH", &h), -EBADMSG);
	assert_true(h.ok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scan),
	    cmocka_unit_test(test_parse_valid),
	    cmocka_unit_test(test_parse_invalid),
	    cmocka_unit_test(test_parse_name_limits),
	    cmocka_unit_test(test_format_roundtrip),
	    cmocka_unit_test(test_mutates),
	    cmocka_unit_test(test_reply_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
