#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "notify.h"

/* A datagram socket standing in for systemd's notification socket. */
struct fake_systemd {
	char dir[64];
	char path[96];
	int fd;
	struct ev_loop *loop;
};

static int setup(void **state)
{
	struct fake_systemd *f = calloc(1, sizeof(*f));
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/moletun-notify-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/notify", f->dir);
	f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(f->fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", f->path);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	setenv("NOTIFY_SOCKET", f->path, 1);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	f->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(f->loop);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fake_systemd *f = *state;

	notify_finish(f->loop);
	ev_loop_destroy(f->loop);
	close(f->fd);
	unlink(f->path);
	rmdir(f->dir);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	free(f);
	return 0;
}

/* The next datagram within timeout_ms, or NULL. */
static char *receive(struct fake_systemd *f, int timeout_ms)
{
	static char buf[4096];
	struct pollfd pfd = {.fd = f->fd, .events = POLLIN};
	ssize_t n;

	if (poll(&pfd, 1, timeout_ms) != 1)
		return NULL;
	n = recv(f->fd, buf, sizeof(buf) - 1, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	return buf;
}

static void expect_message(struct fake_systemd *f, const char *expected)
{
	char *got = receive(f, 1000);

	assert_non_null(got);
	assert_string_equal(got, expected);
}

static void expect_nothing(struct fake_systemd *f)
{
	char *got = receive(f, 50);

	if (got)
		fail_msg("unexpected notification '%s'", got);
}

static uint64_t monotonic_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void break_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static void run_loop_for(struct ev_loop *loop, double seconds)
{
	ev_timer stop;

	ev_timer_init(&stop, break_cb, seconds, 0.);
	ev_timer_start(loop, &stop);
	ev_run(loop, 0);
	ev_timer_stop(loop, &stop);
}

static void test_lifecycle_sequence(void **state)
{
	struct fake_systemd *f = *state;
	uint64_t before, after, usec;
	char *got;

	notify_init(f->loop);
	notify_ready();
	expect_message(f, "READY=1");
	notify_status("2/3 tunnels up; primary: backoff (connection refused)");
	expect_message(f, "STATUS=2/3 tunnels up; primary: backoff (connection refused)");
	/* Unchanged status is not re-sent; a change is; going back is a change too. */
	notify_status("2/3 tunnels up; primary: backoff (connection refused)");
	expect_nothing(f);
	notify_status("3/3 tunnels up");
	expect_message(f, "STATUS=3/3 tunnels up");
	notify_status("2/3 tunnels up; primary: backoff (connection refused)");
	expect_message(f, "STATUS=2/3 tunnels up; primary: backoff (connection refused)");

	before = monotonic_usec();
	notify_reloading();
	after = monotonic_usec();
	got = receive(f, 1000);
	assert_non_null(got);
	assert_int_equal(sscanf(got, "RELOADING=1\nMONOTONIC_USEC=%" SCNu64, &usec), 1);
	assert_true(usec >= before && usec <= after);
	assert_non_null(strchr(got, '\n'));
	assert_null(strchr(strchr(got, '\n') + 1, '\n'));
	notify_ready();
	expect_message(f, "READY=1");
	notify_stopping();
	expect_message(f, "STOPPING=1");
	expect_nothing(f);
}

static void test_status_is_one_line(void **state)
{
	struct fake_systemd *f = *state;

	/* Text from an SSH server must not smuggle in "READY=1" or any other assignment. */
	notify_status("primary: backoff (banner\nREADY=1\r\x7f)");
	expect_message(f, "STATUS=primary: backoff (banner READY=1  )");
	notify_status("primary: backoff (banner\nREADY=1\r\x7f)");
	expect_nothing(f);
}

static void test_watchdog(void **state)
{
	struct fake_systemd *f = *state;
	char pid[32];
	int pings = 0;
	char *got;

	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_USEC", "200000", 1);
	setenv("WATCHDOG_PID", pid, 1);
	notify_init(f->loop);
	/* Every 100 ms (half of WATCHDOG_USEC): 4 pings in 450 ms. */
	run_loop_for(f->loop, 0.45);
	while ((got = receive(f, 0)) != NULL) {
		assert_string_equal(got, "WATCHDOG=1");
		pings++;
	}
	/* A loaded machine may run the loop late, never early. */
	assert_in_range(pings, 2, 5);

	/* Stopped by notify_finish: a wedged or finished loop no longer pings. */
	notify_finish(f->loop);
	run_loop_for(f->loop, 0.25);
	expect_nothing(f);
}

static void test_watchdog_for_another_process(void **state)
{
	struct fake_systemd *f = *state;

	/* WATCHDOG_PID names the main process; a child it forked must not ping. */
	setenv("WATCHDOG_USEC", "100000", 1);
	setenv("WATCHDOG_PID", "1", 1);
	notify_init(f->loop);
	run_loop_for(f->loop, 0.2);
	expect_nothing(f);
}

static void test_noop_outside_systemd(void **state)
{
	struct fake_systemd *f = *state;
	char pid[32];

	unsetenv("NOTIFY_SOCKET");
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_USEC", "100000", 1);
	setenv("WATCHDOG_PID", pid, 1);
	notify_init(f->loop);
	notify_ready();
	notify_status("1/1 tunnels up");
	notify_reloading();
	notify_stopping();
	run_loop_for(f->loop, 0.2);
	expect_nothing(f);
	notify_finish(f->loop);

	/* Nothing was remembered while disabled: the first real status is sent. */
	setenv("NOTIFY_SOCKET", f->path, 1);
	unsetenv("WATCHDOG_USEC");
	notify_status("1/1 tunnels up");
	expect_message(f, "STATUS=1/1 tunnels up");

	/* An empty NOTIFY_SOCKET is as good as none. */
	setenv("NOTIFY_SOCKET", "", 1);
	notify_ready();
	setenv("NOTIFY_SOCKET", f->path, 1);
	expect_nothing(f);
}

/* Sends distinct statuses until the reader's queue is full and one waits in moletun. */
static int fill_reader_queue(void)
{
	char text[64];
	int sent = 0;

	while (notify_pending() == 0) {
		snprintf(text, sizeof(text), "filler %d", sent++);
		notify_status(text);
		assert_in_range(sent, 1, 100000);
	}
	return sent;
}

/* Everything the reader gets while the loop flushes, until nothing is pending. */
static int drain(struct fake_systemd *f, char **out, int max)
{
	int n = 0;
	char *got;

	for (int round = 0; round < 200; round++) {
		while ((got = receive(f, 0)) != NULL) {
			assert_true(n < max);
			out[n++] = strdup(got);
		}
		if (notify_pending() == 0 && round > 0)
			break;
		run_loop_for(f->loop, 0.01);
	}
	while ((got = receive(f, 20)) != NULL) {
		assert_true(n < max);
		out[n++] = strdup(got);
	}
	assert_int_equal(notify_pending(), 0);
	return n;
}

static void free_all(char **msgs, int n)
{
	for (int i = 0; i < n; i++)
		free(msgs[i]);
}

static void test_stalled_reader_never_blocks(void **state)
{
	struct fake_systemd *f = *state;
	char *msgs[2100];
	char text[64];
	int n, filled, i;

	/* A blocking send would hang here; SIGALRM ends the test as failed instead. */
	alarm(20);
	notify_init(f->loop);
	filled = fill_reader_queue();
	for (i = 0; i < 1000; i++) {
		snprintf(text, sizeof(text), "status %d", i);
		notify_status(text);
	}
	notify_ready();
	notify_reloading();
	notify_reloading();
	notify_reloading();
	notify_ready();
	notify_stopping();
	/* Coalesced: READY, the last RELOADING, READY, STOPPING, and one STATUS. */
	assert_int_equal(notify_pending(), 5);
	alarm(0);

	n = drain(f, msgs, 2100);
	/* The fillers that went out before the queue was full, then the rest in order. */
	for (i = 0; i < n && strncmp(msgs[i], "STATUS=filler ", 14) == 0; i++)
		;
	assert_int_equal(i, filled - 1);
	assert_int_equal(n - i, 5);
	assert_string_equal(msgs[i], "READY=1");
	assert_true(strncmp(msgs[i + 1], "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
	assert_string_equal(msgs[i + 2], "READY=1");
	assert_string_equal(msgs[i + 3], "STOPPING=1");
	assert_string_equal(msgs[i + 4], "STATUS=status 999");
	free_all(msgs, n);

	/* Unchanged status is still not re-sent after a backlog. */
	notify_status("status 999");
	expect_nothing(f);
}

static void test_watchdog_sent_once_after_stall(void **state)
{
	struct fake_systemd *f = *state;
	char *msgs[1100];
	char pid[32];
	int n, pings = 0;

	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("WATCHDOG_USEC", "100000", 1);
	setenv("WATCHDOG_PID", pid, 1);
	notify_init(f->loop);
	fill_reader_queue();
	/* About 10 ticks while nobody reads. */
	run_loop_for(f->loop, 0.5);
	assert_int_equal(notify_pending(), 2); /* the last filler status and one ping */
	n = drain(f, msgs, 1100);
	for (int i = 0; i < n; i++)
		pings += strcmp(msgs[i], "WATCHDOG=1") == 0;
	assert_int_equal(pings, 1);
	assert_string_equal(msgs[n - 1], "WATCHDOG=1");
	free_all(msgs, n);
}

static void test_reader_comes_back(void **state)
{
	struct fake_systemd *f = *state;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	notify_init(f->loop);
	notify_ready();
	expect_message(f, "READY=1");
	/* The manager's socket goes away (re-executed): nothing is lost meanwhile. */
	close(f->fd);
	unlink(f->path);
	notify_status("1/1 tunnels up");
	notify_stopping();
	assert_int_equal(notify_pending(), 2);
	f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(f->fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", f->path);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	/* Reconnected by the retry timer (1 s). */
	run_loop_for(f->loop, 1.5);
	expect_message(f, "STOPPING=1");
	expect_message(f, "STATUS=1/1 tunnels up");
	assert_int_equal(notify_pending(), 0);
}

static void test_fdstore_carries_descriptor(void **state)
{
	struct fake_systemd *f = *state;
	union {
		struct cmsghdr header;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	char buf[128];
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = &control,
			    .msg_controllen = sizeof(control)};
	struct stat sent, got;
	struct cmsghdr *cm;
	int fds[2], fd;
	ssize_t n;

	assert_int_equal(pipe(fds), 0);
	assert_int_equal(notify_fdstore(fds[1], "listen:x"), -EINVAL);
	assert_int_equal(notify_fdstore(fds[1], ""), -EINVAL);
	assert_int_equal(notify_fdstore(fds[1], "listen-127.0.0.1-5433"), 0);
	n = recvmsg(f->fd, &mh, MSG_DONTWAIT);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "FDSTORE=1\nFDNAME=listen-127.0.0.1-5433");
	cm = CMSG_FIRSTHDR(&mh);
	assert_non_null(cm);
	assert_int_equal(cm->cmsg_type, SCM_RIGHTS);
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	assert_int_equal(fstat(fds[1], &sent), 0);
	assert_int_equal(fstat(fd, &got), 0);
	assert_true(sent.st_ino == got.st_ino);
	close(fd);
	close(fds[0]);
	close(fds[1]);
	expect_nothing(f);
}

static void test_fdstore_remove(void **state)
{
	struct fake_systemd *f = *state;
	char long_name[300];

	memset(long_name, 'a', 256);
	long_name[256] = '\0';
	assert_int_equal(notify_fdstore_remove("L-127.0.0.1:5433"), -EINVAL);
	assert_int_equal(notify_fdstore_remove(""), -EINVAL);
	assert_int_equal(notify_fdstore_remove("two words"), -EINVAL);
	assert_int_equal(notify_fdstore_remove("line\nbreak"), -EINVAL);
	assert_int_equal(notify_fdstore_remove(long_name), -EINVAL);
	long_name[255] = '\0';
	assert_int_equal(notify_fdstore_remove(long_name), 0);
	assert_non_null(receive(f, 1000));
	assert_int_equal(notify_fdstore_remove("L-127.0.0.1-5433"), 0);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=L-127.0.0.1-5433");
	expect_nothing(f);

	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(notify_fdstore_remove("control"), -ENOTCONN);
	setenv("NOTIFY_SOCKET", f->path, 1);
	expect_nothing(f);
}

/* Store, remove and store again under one name, while the manager does not read: the
 * three come out in order, none dropped or merged, and the loop never blocks. */
static void test_fdstore_order_after_stall(void **state)
{
	struct fake_systemd *f = *state;
	char *msgs[1100];
	int fds[2], n, i;

	alarm(20);
	notify_init(f->loop);
	assert_int_equal(pipe(fds), 0);
	fill_reader_queue();
	assert_int_equal(notify_fdstore(fds[0], "L-127.0.0.1-5433"), 0);
	assert_int_equal(notify_fdstore_remove("L-127.0.0.1-5433"), 0);
	notify_ready();
	assert_int_equal(notify_fdstore(fds[1], "L-127.0.0.1-5433"), 0);
	notify_ready(); /* not merged across the store that came between */
	assert_int_equal(notify_pending(), 6);
	alarm(0);
	n = drain(f, msgs, 1100);
	for (i = 0; i < n && strncmp(msgs[i], "STATUS=filler ", 14) == 0; i++)
		;
	assert_int_equal(n - i, 6);
	assert_string_equal(msgs[i], "FDSTORE=1\nFDNAME=L-127.0.0.1-5433");
	assert_string_equal(msgs[i + 1], "FDSTOREREMOVE=1\nFDNAME=L-127.0.0.1-5433");
	assert_string_equal(msgs[i + 2], "READY=1");
	assert_string_equal(msgs[i + 3], "FDSTORE=1\nFDNAME=L-127.0.0.1-5433");
	assert_string_equal(msgs[i + 4], "READY=1");
	assert_true(strncmp(msgs[i + 5], "STATUS=filler ", 14) == 0);
	free_all(msgs, n);
	close(fds[0]);
	close(fds[1]);
}

/* A datagram socket bound to `path` exactly as long as given (no NUL when 108 bytes). */
static int bind_exact(const char *path, size_t len)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_true(len <= sizeof(addr.sun_path));
	memcpy(addr.sun_path, path, len);
	if (path[0] == '@')
		addr.sun_path[0] = '\0';
	assert_int_equal(bind(fd, (struct sockaddr *)&addr,
			      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)),
			 0);
	return fd;
}

/* What `path` as NOTIFY_SOCKET makes notify_ready() send to `fd`, or NULL; stderr in err. */
static char *ready_through(const char *path, int fd, char *err, size_t err_size)
{
	static char buf[64];
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	FILE *captured = tmpfile();
	int saved = dup(STDERR_FILENO);
	ssize_t n;

	assert_non_null(captured);
	setenv("NOTIFY_SOCKET", path, 1);
	fflush(stderr);
	dup2(fileno(captured), STDERR_FILENO);
	notify_ready();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(captured);
	n = (ssize_t)fread(err, 1, err_size - 1, captured);
	err[n > 0 ? n : 0] = '\0';
	fclose(captured);
	notify_finish(NULL);
	if (fd < 0 || poll(&pfd, 1, 200) != 1)
		return NULL;
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	return buf;
}

/*
 * NOTIFY_SOCKET at the limits of sockaddr_un: a path of 108 bytes (no room for a NUL) and
 * an abstract name of 107 are reached; a longer path is refused with a log line saying so.
 */
static void test_socket_path_limits(void **state)
{
	char dir[64], path[128], err[512], *got;
	size_t dir_len;
	int fd;

	snprintf(dir, sizeof(dir), "/tmp/moletun-notify-XXXXXX");
	assert_non_null(mkdtemp(dir));
	dir_len = strlen(dir);
	memset(path, 'n', sizeof(path));
	memcpy(path, dir, dir_len);
	path[dir_len] = '/';
	path[108] = '\0';
	fd = bind_exact(path, 108);
	got = ready_through(path, fd, err, sizeof(err));
	assert_non_null(got);
	assert_string_equal(got, "READY=1");
	close(fd);
	unlink(path);

	snprintf(path, sizeof(path), "@moletun-notify-%d-", (int)getpid());
	memset(path + strlen(path), 'a', 108 - strlen(path));
	path[108] = '\0';
	fd = bind_exact(path, 108);
	got = ready_through(path, fd, err, sizeof(err));
	assert_non_null(got);
	assert_string_equal(got, "READY=1");
	close(fd);

	memset(path, 'n', sizeof(path));
	memcpy(path, dir, dir_len);
	path[dir_len] = '/';
	path[109] = '\0';
	assert_null(ready_through(path, -1, err, sizeof(err)));
	if (!strstr(err, "NOTIFY_SOCKET") || !strstr(err, "too long"))
		fail_msg("no log line about the long NOTIFY_SOCKET: '%s'", err);
	unsetenv("NOTIFY_SOCKET");
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_lifecycle_sequence, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_status_is_one_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_watchdog, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_watchdog_for_another_process, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_noop_outside_systemd, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stalled_reader_never_blocks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_watchdog_sent_once_after_stall, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reader_comes_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fdstore_carries_descriptor, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fdstore_remove, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fdstore_order_after_stall, setup, teardown),
	    cmocka_unit_test(test_socket_path_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
