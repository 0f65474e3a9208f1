#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <ctype.h>
#include <ev.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

/* stderr replaced by a pipe or a stream socket that the test reads (or does not). */
struct stalled_stderr {
	int saved;
	int reader;
	struct ev_loop *loop;
};

static void redirect(struct stalled_stderr *s, bool use_socket)
{
	int fds[2];

	if (use_socket)
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
	else
		assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	s->saved = dup(STDERR_FILENO);
	assert_true(s->saved >= 0);
	assert_int_equal(dup2(fds[1], STDERR_FILENO), STDERR_FILENO);
	close(fds[1]);
	s->reader = fds[0];
	s->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(s->loop);
}

static void restore(struct stalled_stderr *s)
{
	log_finish(0);
	dup2(s->saved, STDERR_FILENO);
	close(s->saved);
	close(s->reader);
	ev_loop_destroy(s->loop);
}

static void break_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop while reading everything the log writes; returns it (caller frees). */
static char *read_all(struct stalled_stderr *s, size_t *ret_len)
{
	size_t cap = 1 << 20, len = 0;
	char *out = malloc(cap);
	ev_timer stop;

	assert_non_null(out);
	ev_timer_init(&stop, break_cb, 0.01, 0.);
	for (int idle = 0; idle < 20;) {
		struct pollfd pfd = {.fd = s->reader, .events = POLLIN};
		ssize_t n;

		ev_timer_start(s->loop, &stop);
		ev_run(s->loop, 0);
		if (poll(&pfd, 1, 10) != 1) {
			idle++;
			continue;
		}
		if (len + 65536 > cap) {
			cap *= 2;
			out = realloc(out, cap);
			assert_non_null(out);
		}
		n = read(s->reader, out + len, 65536);
		assert_true(n > 0);
		len += (size_t)n;
		idle = 0;
	}
	out[len < cap ? len : cap - 1] = '\0';
	*ret_len = len;
	return out;
}

static void stalled_reader(bool use_socket)
{
	struct stalled_stderr s;
	uint64_t dropped, lines = 0, logged = 20000;
	char *out, *p;
	size_t len;

	redirect(&s, use_socket);
	log_init(LOG_DEBUG);
	log_attach(s.loop);
	/* Nobody reads: a blocking write would hang; SIGALRM fails the test instead. */
	alarm(20);
	for (uint64_t i = 0; i < logged; i++)
		log_info("line %" PRIu64 " of a flapping tunnel's log, padded to look real", i);
	alarm(0);
	dropped = log_dropped();
	assert_true(dropped > 0);
	assert_true(dropped < logged);

	out = read_all(&s, &len);
	/* Only whole lines arrived, in order, then the count of those dropped. */
	assert_true(len > 0 && out[len - 1] == '\n');
	for (p = out; (p = strstr(p, " of a flapping tunnel's log")) != NULL; p++)
		lines++;
	assert_int_equal(lines + dropped, logged);
	p = strstr(out, " log lines dropped (the log reader was stalled)\n");
	assert_non_null(p);
	while (p > out && isdigit((unsigned char)p[-1]))
		p--;
	assert_int_equal(strtoull(p, NULL, 10), dropped);
	assert_int_equal(log_dropped(), 0);
	free(out);

	/* Back to normal: a new line goes straight through. */
	log_info("after the stall");
	out = read_all(&s, &len);
	assert_non_null(strstr(out, "after the stall\n"));
	free(out);
	restore(&s);
}

static void test_stalled_pipe(void **state)
{
	stalled_reader(false);
}

static void test_stalled_journal_socket(void **state)
{
	setenv("JOURNAL_STREAM", "8:1234", 1);
	stalled_reader(true);
	unsetenv("JOURNAL_STREAM");
}

static void test_blocking_before_init(void **state)
{
	struct stalled_stderr s;
	char buf[256];
	ssize_t n;

	/* The command-line tools never call log_init: plain stderr, nothing queued. */
	redirect(&s, false);
	log_warn("from the tool");
	n = read(s.reader, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "warning: from the tool\n"));
	restore(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stalled_pipe),
	    cmocka_unit_test(test_stalled_journal_socket),
	    cmocka_unit_test(test_blocking_before_init),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
