#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "subproc.h"

static char *const no_env[] = {"PATH=/usr/bin:/bin", NULL};

static struct subproc_result run_sh(const char *script, uint64_t timeout_ms, size_t max)
{
	char *argv[] = {"sh", "-c", (char *)script, NULL};
	struct subproc_result res;

	assert_int_equal(subproc_run(argv, no_env, timeout_ms, max, &res), 0);
	return res;
}

static void test_outputs_and_status(void **state)
{
	struct subproc_result res = run_sh("echo out; echo err >&2; exit 3", 5000, 1024);

	(void)state;
	assert_string_equal(res.out, "out\n");
	assert_int_equal(res.out_len, 4);
	assert_string_equal(res.err, "err\n");
	assert_true(WIFEXITED(res.status));
	assert_int_equal(WEXITSTATUS(res.status), 3);
	assert_false(res.timed_out);
	assert_false(res.too_long);
	subproc_result_free(&res);
}

/* The child sees only the environment given, and /dev/null on stdin. */
static void test_environment_and_stdin(void **state)
{
	struct subproc_result res = run_sh("env | sort; cat", 5000, 4096);

	(void)state;
	assert_non_null(strstr(res.out, "PATH=/usr/bin:/bin\n"));
	assert_null(strstr(res.out, "HOME="));
	assert_int_equal(WEXITSTATUS(res.status), 0);
	subproc_result_free(&res);
}

/* A child that hangs (and its own child holding the pipe) is killed at the deadline. */
static void test_timeout(void **state)
{
	double t0 = clock_now();
	struct subproc_result res = run_sh("sleep 30 & echo started; sleep 30", 300, 1024);
	double took = clock_now() - t0;

	(void)state;
	assert_true(res.timed_out);
	assert_string_equal(res.out, "started\n");
	assert_true(WIFSIGNALED(res.status));
	assert_int_equal(WTERMSIG(res.status), SIGKILL);
	assert_true(took >= 0.29);
	assert_true(took < 10.0); /* generous: a loaded machine or a sanitizer build */
	subproc_result_free(&res);
}

static void test_output_cap(void **state)
{
	struct subproc_result res = run_sh("yes 0123456789abcdef", 5000, 64 * 1024);

	(void)state;
	assert_true(res.too_long);
	assert_true(res.out_len + res.err_len <= 64 * 1024);
	subproc_result_free(&res);
}

static void test_missing_program(void **state)
{
	char *argv[] = {"moletun-no-such-program", NULL};
	struct subproc_result res = {.status = 12345};

	(void)state;
	assert_int_equal(subproc_run(argv, no_env, 1000, 1024, &res), -ENOENT);
	assert_int_equal(res.status, 12345);
}

/* Nothing of the parent's leaks into the child: only 0, 1 and 2 are open there. */
static void test_no_descriptors_inherited(void **state)
{
	int fds[2];
	struct subproc_result res;

	(void)state;
	assert_int_equal(pipe(fds), 0); /* without O_CLOEXEC on purpose */
	res = run_sh("ls /proc/self/fd | sort -n | tr '\\n' ' '", 5000, 1024);
	/* the shell's ls sees 0 1 2 and its own directory descriptor, nothing at 3+ else */
	assert_string_equal(res.out, "0 1 2 3 ");
	subproc_result_free(&res);
	close(fds[0]);
	close(fds[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_outputs_and_status),
	    cmocka_unit_test(test_environment_and_stdin),
	    cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_output_cap),
	    cmocka_unit_test(test_missing_program),
	    cmocka_unit_test(test_no_descriptors_inherited),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
