#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "control_proto.h"
#include "log.h"
#include "status_format.h"

#define TEST_TIMEOUT_SEC 1.0 /* the server's per-client timeout in these tests */
#define OTHER_UID	 4242
#define OTHER_GID	 4242
#define PARKED_MAX	 (CONTROL_CLIENTS_MAX + 8)
#define ALERT_REPLY	 "ok alerts=1 failed=0\nops: HTTP 200\n"

/* The daemon side: a fake ops table over a configurable set of tunnels. */
struct fake_daemon {
	pthread_mutex_t lock;
	size_t n_tunnels; /* "t0".."tN-1"; t0 is up, the others back off */
	bool reload_invalid;
	int reloads;
	int reconnects;
	char reconnected[CONTROL_NAME_MAX]; /* "--all" for all */
	/* alert-test replies taken and not finished yet: clients waiting on a deferred reply */
	struct control_deferred *parked[PARKED_MAX];
	size_t n_parked;
};

struct fixture {
	char dir[64];
	char path[96];
	struct fake_daemon fake;
	struct control_ops ops;
	struct ev_loop *loop;
	struct control_server *server;
	ev_async stop;
	ev_timer heartbeat; /* stands in for a tunnel: must keep ticking */
	atomic_int beats;
	pthread_t thread;
	bool running;
};

static void fake_fill(struct fake_daemon *d, struct status *ret, const char *only)
{
	size_t n = only ? 1 : d->n_tunnels;

	ret->tunnels = calloc(n, sizeof(*ret->tunnels));
	assert_non_null(ret->tunnels);
	ret->n_tunnels = n;
	for (size_t i = 0; i < n; i++) {
		struct status_tunnel *t = &ret->tunnels[i];

		if (only)
			snprintf(t->name, sizeof(t->name), "%s", only);
		else
			snprintf(t->name, sizeof(t->name), "t%zu", i);
		t->state = strcmp(t->name, "t0") == 0 ? TUNNEL_UP : TUNNEL_BACKOFF;
		t->since.tv_sec = 1714564800;
		snprintf(t->host, sizeof(t->host), "host%zu.example.com", i);
		t->port = 22;
		snprintf(t->user, sizeof(t->user), "deploy");
		t->forwards = calloc(1, sizeof(*t->forwards));
		assert_non_null(t->forwards);
		t->n_forwards = 1;
		snprintf(t->forwards[0].listen, sizeof(t->forwards[0].listen), "127.0.0.1:%zu",
			 5000 + i);
		snprintf(t->forwards[0].target, sizeof(t->forwards[0].target), "db:5432");
	}
}

static bool fake_knows(struct fake_daemon *d, const char *name)
{
	char *end;
	unsigned long i;

	if (name[0] != 't')
		return false;
	i = strtoul(name + 1, &end, 10);
	return *end == '\0' && end != name + 1 && i < d->n_tunnels;
}

static int fake_snapshot(void *userdata, const char *name, struct status *ret)
{
	struct fake_daemon *d = userdata;
	int r = 0;

	pthread_mutex_lock(&d->lock);
	if (name && !fake_knows(d, name))
		r = -ENOENT;
	else
		fake_fill(d, ret, name);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int fake_reconnect(void *userdata, const char *name)
{
	struct fake_daemon *d = userdata;
	int r = 0;

	pthread_mutex_lock(&d->lock);
	if (name && !fake_knows(d, name)) {
		r = -ENOENT;
	} else {
		d->reconnects++;
		snprintf(d->reconnected, sizeof(d->reconnected), "%s", name ? name : "--all");
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int fake_reload(void *userdata, struct diag *errors)
{
	struct fake_daemon *d = userdata;
	int r = 0;

	pthread_mutex_lock(&d->lock);
	if (d->reload_invalid) {
		diag_add(errors, "/etc/moletun/moletun.conf", 3, "unknown key 'hots'");
		diag_add(errors, "/etc/moletun/moletun.conf", 9, "tunnel 'x': host is required");
		r = -EINVAL;
	} else {
		d->reloads++;
	}
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int fake_alert_test(void *userdata, const char *name, struct control_deferred *reply)
{
	struct fake_daemon *d = userdata;
	int r = 0;

	pthread_mutex_lock(&d->lock);
	if (d->n_parked == PARKED_MAX)
		r = -ENOBUFS;
	else
		d->parked[d->n_parked++] = reply;
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* Answers every parked alert-test; only while the loop is not running in its thread. */
static void fake_finish_parked(struct fake_daemon *d)
{
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->n_parked; i++)
		control_deferred_finish(d->parked[i], "ok alerts=1 failed=0", "ops: HTTP 200\n",
					strlen("ops: HTTP 200\n"));
	d->n_parked = 0;
	pthread_mutex_unlock(&d->lock);
}

static size_t fake_parked(struct fake_daemon *d)
{
	size_t n;

	pthread_mutex_lock(&d->lock);
	n = d->n_parked;
	pthread_mutex_unlock(&d->lock);
	return n;
}

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static void heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct fixture *f = w->data;

	atomic_fetch_add(&f->beats, 1);
}

static void *loop_thread(void *arg)
{
	struct fixture *f = arg;

	ev_run(f->loop, 0);
	return NULL;
}

static void make_tmpdir(struct fixture *f)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/moletun-control-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	/* Other users (the uid-switching tests) must reach the socket inside. */
	assert_int_equal(chmod(f->dir, 0755), 0);
	snprintf(f->path, sizeof(f->path), "%s/control.sock", f->dir);
}

static void start_loop(struct fixture *f)
{
	assert_int_equal(pthread_create(&f->thread, NULL, loop_thread, f), 0);
	f->running = true;
}

static void stop_loop(struct fixture *f)
{
	if (!f->running)
		return;
	ev_async_send(f->loop, &f->stop);
	assert_int_equal(pthread_join(f->thread, NULL), 0);
	f->running = false;
}

static struct fixture *fixture_new(void)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	make_tmpdir(f);
	pthread_mutex_init(&f->fake.lock, NULL);
	f->fake.n_tunnels = 2;
	f->ops = (struct control_ops){
	    .userdata = &f->fake,
	    .snapshot = fake_snapshot,
	    .reconnect = fake_reconnect,
	    .reload = fake_reload,
	    .alert_test = fake_alert_test,
	};
	f->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(f->loop);
	ev_async_init(&f->stop, stop_cb);
	ev_async_start(f->loop, &f->stop);
	ev_timer_init(&f->heartbeat, heartbeat_cb, 0.01, 0.01);
	f->heartbeat.data = f;
	ev_timer_start(f->loop, &f->heartbeat);
	return f;
}

static void fixture_free(struct fixture *f)
{
	stop_loop(f);
	control_server_destroy(f->server);
	fake_finish_parked(&f->fake); /* their clients are gone: this only frees */
	ev_timer_stop(f->loop, &f->heartbeat);
	ev_async_stop(f->loop, &f->stop);
	ev_loop_destroy(f->loop);
	pthread_mutex_destroy(&f->fake.lock);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
}

static int setup(void **state)
{
	struct fixture *f = fixture_new();

	assert_int_equal(control_server_create(f->loop, f->path, NULL, &f->ops, &f->server), 0);
	control_server_set_timeout(f->server, TEST_TIMEOUT_SEC);
	start_loop(f);
	*state = f;
	return 0;
}

/* The server without its loop thread: the test steps the loop itself (pump()). */
static int setup_manual(void **state)
{
	struct fixture *f = fixture_new();

	assert_int_equal(control_server_create(f->loop, f->path, NULL, &f->ops, &f->server), 0);
	/* Nobody times out while the test takes its time between steps. */
	control_server_set_timeout(f->server, 30.0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct stat st;

	stop_loop(f);
	control_server_destroy(f->server);
	f->server = NULL;
	/* The server removes its socket when it goes. */
	assert_int_equal(lstat(f->path, &st), -1);
	fixture_free(f);
	return 0;
}

static int client_connect(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 5};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	return fd;
}

/* Reads until EOF (or a reset after some data) and returns what came, NUL-terminated. */
static char *read_all(int fd, size_t *ret_len)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);

	assert_non_null(buf);
	for (;;) {
		ssize_t n;

		if (len + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			break;
		if (n < 0)
			fail_msg("recv: %s", strerror(errno));
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	return buf;
}

static void send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

		assert_true(n > 0);
		data += n;
		len -= (size_t)n;
	}
}

/* One whole exchange: connect, send `request` bytes, return the reply. */
static char *exchange(struct fixture *f, const char *request, size_t len)
{
	int fd = client_connect(f->path);
	char *reply;

	assert_true(fd >= 0);
	send_all(fd, request, len);
	reply = read_all(fd, NULL);
	close(fd);
	return reply;
}

static void expect_reply(struct fixture *f, const char *request, const char *expected)
{
	char *reply = exchange(f, request, strlen(request));

	assert_string_equal(reply, expected);
	free(reply);
}

/* What the server should send for a status request, built the same way as the daemon. */
static char *expected_status(struct fixture *f, bool json, const char *name)
{
	struct status st = {0};
	char *body = NULL, *reply = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&body, &len);

	assert_non_null(out);
	assert_int_equal(fake_snapshot(&f->fake, name, &st), 0);
	if (json)
		status_format_json(&st, out);
	else
		status_format_table(&st, time(NULL), out);
	fclose(out);
	assert_true(asprintf(&reply, "ok tunnels=%zu up=%zu healthy=%zu\n%s", st.n_tunnels,
			     status_count_up(&st), status_count_healthy(&st), body) > 0);
	status_free(&st);
	free(body);
	return reply;
}

static void test_status(void **state)
{
	struct fixture *f = *state;
	char *expected, *reply;

	expected = expected_status(f, true, NULL);
	expect_reply(f, "status --json\n", expected);
	assert_true(strncmp(expected, "ok tunnels=2 up=1 healthy=1\n{\"tunnels\":[{\"name\":\"t0\"",
			    52) == 0);
	free(expected);

	expected = expected_status(f, true, "t0");
	expect_reply(f, "status --json t0\n", expected);
	assert_true(strncmp(expected, "ok tunnels=1 up=1 healthy=1\n", 28) == 0);
	free(expected);

	/* The table has an age in it: allow for a second ticking over. */
	expected = expected_status(f, false, NULL);
	reply = exchange(f, "status\n", 7);
	assert_true(strncmp(reply, "ok tunnels=2 up=1 healthy=1\nTUNNEL ", 35) == 0);
	assert_int_equal(strlen(reply), strlen(expected));
	free(reply);
	free(expected);

	expect_reply(f, "status nosuch\n", "error no such tunnel: nosuch\n");
	expect_reply(f, "status --json t9\n", "error no such tunnel: t9\n");
}

static void test_metrics(void **state)
{
	struct fixture *f = *state;
	char *reply = exchange(f, "metrics\n", 8);

	assert_true(strncmp(reply, "ok\n# HELP moletun_tunnel_up ", 28) == 0);
	assert_non_null(strstr(reply, "\nmoletun_tunnel_up{tunnel=\"t1\"} 0\n"));
	free(reply);
	expect_reply(f, "metrics t0\n", "error usage: metrics\n");
}

static void test_reconnect_and_reload(void **state)
{
	struct fixture *f = *state;

	expect_reply(f, "reconnect t1\n", "ok\n");
	assert_string_equal(f->fake.reconnected, "t1");
	expect_reply(f, "reconnect --all\n", "ok\n");
	assert_string_equal(f->fake.reconnected, "--all");
	assert_int_equal(f->fake.reconnects, 2);
	expect_reply(f, "reconnect nosuch\n", "error no such tunnel: nosuch\n");
	expect_reply(f, "reconnect\n", "error usage: reconnect NAME|--all\n");
	assert_int_equal(f->fake.reconnects, 2);

	expect_reply(f, "reload\n", "ok\n");
	assert_int_equal(f->fake.reloads, 1);
	pthread_mutex_lock(&f->fake.lock);
	f->fake.reload_invalid = true;
	pthread_mutex_unlock(&f->fake.lock);
	expect_reply(f, "reload\n",
		     "error invalid configuration\n"
		     "/etc/moletun/moletun.conf:3: unknown key 'hots'\n"
		     "/etc/moletun/moletun.conf:9: tunnel 'x': host is required\n");
	assert_int_equal(f->fake.reloads, 1);
}

static void test_framing(void **state)
{
	struct fixture *f = *state;
	char *reply;
	int fd;

	/* CRLF (telnet, socat -t) and a request ended by EOF instead of LF. */
	expect_reply(f, "reload\r\n", "ok\n");
	fd = client_connect(f->path);
	send_all(fd, "reload", 6);
	shutdown(fd, SHUT_WR);
	reply = read_all(fd, NULL);
	assert_string_equal(reply, "ok\n");
	free(reply);
	close(fd);

	/* A request split over several writes. */
	fd = client_connect(f->path);
	send_all(fd, "rel", 3);
	usleep(50000);
	send_all(fd, "oad\nstatus\n", 11);
	reply = read_all(fd, NULL);
	assert_string_equal(reply, "ok\n");
	free(reply);
	close(fd);
	assert_int_equal(f->fake.reloads, 3);

	/* Connecting and leaving without a word is fine. */
	fd = client_connect(f->path);
	close(fd);
	expect_reply(f, "reload\n", "ok\n");
}

static void test_garbage(void **state)
{
	struct fixture *f = *state;
	static const char binary[] = "\x00\xff\xfe\x01\x02\x03\n";
	char *reply;

	expect_reply(f, "hello\n", "error unknown command\n");
	expect_reply(f, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "error unknown command\n");
	expect_reply(f, "\n", "error empty request\n");
	expect_reply(f, "status \x1b[2J\n", "error usage: status [--json] [NAME]\n");
	reply = exchange(f, binary, sizeof(binary) - 1);
	assert_string_equal(reply, "error unknown command\n");
	free(reply);
	/* The daemon carries on. */
	reply = exchange(f, "status --json\n", 14);
	assert_true(strncmp(reply, "ok tunnels=2", 12) == 0);
	free(reply);
}

static void test_huge_line(void **state)
{
	struct fixture *f = *state;
	size_t size = 1 << 20, sent = 0;
	char *line = malloc(size), *reply;
	int fd, beats;

	assert_non_null(line);
	memset(line, 'A', size - 1);
	line[size - 1] = '\n';
	fd = client_connect(f->path);
	assert_true(fd >= 0);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	beats = atomic_load(&f->beats);
	/* Write as much of the megabyte as the server takes, then look for the reply. */
	for (int spins = 0; sent < size && spins < 200; spins++) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT | POLLIN};
		ssize_t n;

		poll(&pfd, 1, 20);
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
			break;
		n = send(fd, line + sent, size - sent, MSG_NOSIGNAL);
		if (n > 0)
			sent += (size_t)n;
		else if (errno != EAGAIN)
			break;
	}
	fcntl(fd, F_SETFL, 0);
	reply = read_all(fd, NULL);
	assert_string_equal(reply, "error request too long\n");
	assert_true(sent < size);
	free(reply);
	close(fd);

	/* Exactly at the limit: 1023 bytes and LF is a request (an unknown one). */
	memset(line, 'x', CONTROL_REQUEST_MAX - 1);
	line[CONTROL_REQUEST_MAX - 1] = '\n';
	reply = exchange(f, line, CONTROL_REQUEST_MAX);
	assert_string_equal(reply, "error unknown command\n");
	free(reply);
	line[CONTROL_REQUEST_MAX - 1] = 'x';
	line[CONTROL_REQUEST_MAX] = '\n';
	reply = exchange(f, line, CONTROL_REQUEST_MAX + 1);
	assert_string_equal(reply, "error request too long\n");
	free(reply);

	free(line);
	usleep(100000);
	assert_true(atomic_load(&f->beats) > beats);
	expect_reply(f, "reload\n", "ok\n");
}

/* Reads until the server closes and checks all it sent that was not read yet. */
static void expect_closed(int fd, const char *expected)
{
	char *reply = read_all(fd, NULL);

	assert_string_equal(reply, expected);
	free(reply);
}

/*
 * Opens n connections that never speak. Once the slots are full each newcomer takes the
 * place of the oldest idle client: checks that exactly the first n - CONTROL_CLIENTS_MAX
 * were told "error busy", and that the others are still open.
 */
static void open_idle(struct fixture *f, int *fds, size_t n)
{
	size_t evicted = n > CONTROL_CLIENTS_MAX ? n - CONTROL_CLIENTS_MAX : 0;

	for (size_t i = 0; i < n; i++) {
		fds[i] = client_connect(f->path);
		assert_true(fds[i] >= 0);
	}
	for (size_t i = 0; i < n; i++) {
		struct pollfd pfd = {.fd = fds[i], .events = POLLIN};
		char buf[64];
		ssize_t len;

		if (i >= evicted) {
			assert_int_equal(poll(&pfd, 1, 0), 0);
			continue;
		}
		assert_int_equal(poll(&pfd, 1, 5000), 1);
		len = recv(fds[i], buf, sizeof(buf) - 1, 0);
		assert_true(len >= 0);
		buf[len] = '\0';
		assert_string_equal(buf, "error busy\n");
	}
}

static void test_idle_clients_bounded(void **state)
{
	struct fixture *f = *state;
	int fds[CONTROL_CLIENTS_MAX + 8];
	size_t n = sizeof(fds) / sizeof(fds[0]), first = n - CONTROL_CLIENTS_MAX;
	int beats;

	beats = atomic_load(&f->beats);
	open_idle(f, fds, n);
	/* While idle clients hold every slot, a newcomer is served at once... */
	expect_reply(f, "reload\n", "ok\n");
	/* ...in the place of the oldest of them. */
	expect_closed(fds[first], "error busy\n");
	/* The others are dropped with a word after the timeout... */
	for (size_t i = first + 1; i < n; i++)
		expect_closed(fds[i], "error timeout\n");
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	/* ...and the server serves again; the loop never stalled. */
	expect_reply(f, "reload\n", "ok\n");
	assert_true(atomic_load(&f->beats) > beats + 20);
}

static void test_500_idle_clients(void **state)
{
	struct fixture *f = *state;
	struct rlimit rl;
	size_t n = 500;
	int *fds = calloc(n, sizeof(int));
	int beats;

	assert_non_null(fds);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < 2 * n + 64) {
		rl.rlim_cur = rl.rlim_max < 2 * n + 64 ? rl.rlim_max : 2 * n + 64;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < 2 * n + 64) {
		free(fds);
		print_message("RLIMIT_NOFILE %lu is too low for 500 clients\n",
			      (unsigned long)rl.rlim_cur);
		skip();
	}
	beats = atomic_load(&f->beats);
	open_idle(f, fds, n);
	usleep(100000);
	assert_true(atomic_load(&f->beats) > beats);
	/* Served while the last 32 of them still hold the slots. */
	expect_reply(f, "reload\n", "ok\n");
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	/* Closed by the clients themselves: the slots free up without waiting for timeouts. */
	usleep(100000);
	expect_reply(f, "reload\n", "ok\n");
}

static void test_client_that_never_reads(void **state)
{
	struct fixture *f = *state;
	char *expected, *reply;
	size_t got = 0, expected_len;
	int lazy, beats;

	pthread_mutex_lock(&f->fake.lock);
	f->fake.n_tunnels = 8000; /* a ~2.4 MB reply, far more than a socket buffer */
	pthread_mutex_unlock(&f->fake.lock);
	expected = expected_status(f, true, NULL);
	expected_len = strlen(expected);
	assert_true(expected_len > 1500000);

	lazy = client_connect(f->path);
	send_all(lazy, "status --json\n", 14);
	beats = atomic_load(&f->beats);
	/* Another client is served in full while the lazy one sits on its reply. */
	expect_reply(f, "status --json\n", expected);
	assert_true(atomic_load(&f->beats) > beats);

	/* After the timeout the lazy client is cut off short of the whole reply. */
	usleep((useconds_t)(TEST_TIMEOUT_SEC * 1.5e6));
	free(read_all(lazy, &got));
	assert_true(got < expected_len);
	close(lazy);
	free(expected);

	reply = exchange(f, "reload\n", 7);
	assert_string_equal(reply, "ok\n");
	free(reply);
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Steps a fixture's loop (no thread) until what is ready now has been handled. */
static void pump(struct fixture *f)
{
	for (int i = 0; i < 8; i++)
		ev_run(f->loop, EVRUN_NOWAIT);
}

/* read_all() for a loop stepped by hand: pumps while waiting (at most 5 s). */
static char *pump_read_all(struct fixture *f, int fd, size_t *ret_len)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	double deadline = now_sec() + 5.0;

	assert_non_null(buf);
	for (;;) {
		ssize_t n;

		if (len + 1 == cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		pump(f);
		n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			break;
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (now_sec() > deadline)
				fail_msg("no EOF within 5 s (%zu bytes so far)", len);
			continue;
		}
		if (n < 0)
			fail_msg("recv: %s", strerror(errno));
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	return buf;
}

static void expect_pumped(struct fixture *f, int fd, const char *expected)
{
	char *reply = pump_read_all(f, fd, NULL);

	assert_string_equal(reply, expected);
	free(reply);
	close(fd);
}

/* The server has neither written to fd nor closed it. */
static void expect_silent(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	assert_int_equal(poll(&pfd, 1, 0), 0);
}

#define N_IDLE	 (CONTROL_CLIENTS_MAX - 1)
#define N_PARKED (CONTROL_CLIENTS_MAX - 2)

/*
 * With every slot taken, a newcomer closes the client that has waited longest without
 * sending a whole request. A request already sent but not read yet counts as sent, and
 * clients being answered (a reply being written, a deferred reply) are never closed. The
 * loop is stepped by hand, so the order of accepts and reads is known.
 */
static void test_eviction_order(void **state)
{
	struct fixture *f = *state;
	int waiting, sent, newcomer, writer, idle[N_IDLE], parked[N_PARKED];
	char *expected, *reply;
	size_t len;

	/*
	 * One batch of 33 accepts: an alert-test and a status request, both unread when the
	 * 33rd makes the server look for room, then 31 silent clients.
	 */
	waiting = client_connect(f->path);
	send_all(waiting, "alert-test\n", 11);
	sent = client_connect(f->path);
	send_all(sent, "status\n", 7);
	for (size_t i = 0; i < N_IDLE; i++)
		idle[i] = client_connect(f->path);
	send_all(idle[0], "stat", 4); /* half a request is no request */
	pump(f);
	/* Both requests were read and handled instead of their senders being closed. */
	reply = pump_read_all(f, sent, NULL);
	assert_true(strncmp(reply, "ok tunnels=2 up=1 healthy=1\n", 28) == 0);
	free(reply);
	close(sent);
	assert_int_equal(fake_parked(&f->fake), 1);
	assert_int_equal(control_server_clients(f->server), CONTROL_CLIENTS_MAX);
	expect_silent(waiting);
	for (size_t i = 0; i < N_IDLE; i++)
		expect_silent(idle[i]);

	/* A newcomer takes the place of the oldest idle client. */
	newcomer = client_connect(f->path);
	send_all(newcomer, "reload\n", 7);
	expect_pumped(f, newcomer, "ok\n");
	expect_pumped(f, idle[0], "error busy\n");
	for (size_t i = 1; i < N_IDLE; i++)
		expect_silent(idle[i]);
	expect_silent(waiting);

	/*
	 * Fill the server with clients being answered: one sits on a 2.4 MB reply it does
	 * not read, 30 wait for alert-test. Each pushes out one idle client, oldest first.
	 */
	f->fake.n_tunnels = 8000;
	expected = expected_status(f, true, NULL);
	writer = client_connect(f->path);
	send_all(writer, "status --json\n", 14);
	for (size_t i = 0; i < N_PARKED; i++) {
		parked[i] = client_connect(f->path);
		send_all(parked[i], "alert-test\n", 11);
	}
	pump(f);
	for (size_t i = 1; i < N_IDLE; i++)
		expect_pumped(f, idle[i], "error busy\n");
	assert_int_equal(fake_parked(&f->fake), 1 + N_PARKED);
	assert_int_equal(control_server_clients(f->server), CONTROL_CLIENTS_MAX);

	/* Now a newcomer is turned away, and nobody else is closed. */
	newcomer = client_connect(f->path);
	send_all(newcomer, "status\n", 7);
	expect_pumped(f, newcomer, "error busy\n");
	expect_silent(waiting);
	for (size_t i = 0; i < N_PARKED; i++)
		expect_silent(parked[i]);
	assert_int_equal(control_server_clients(f->server), CONTROL_CLIENTS_MAX);

	/* Every answer arrives in full. */
	fake_finish_parked(&f->fake);
	expect_pumped(f, waiting, ALERT_REPLY);
	for (size_t i = 0; i < N_PARKED; i++)
		expect_pumped(f, parked[i], ALERT_REPLY);
	reply = pump_read_all(f, writer, &len);
	assert_int_equal(len, strlen(expected));
	assert_true(memcmp(reply, expected, len) == 0);
	free(reply);
	free(expected);
	close(writer);
	pump(f);
	assert_int_equal(control_server_clients(f->server), 0);
}

/*
 * Sends `block` again and again (pausing `pause_us` between sends) until the server
 * hangs up, for at most 5 s. Returns the reply; *ret_seconds: how long it took.
 */
static char *stream_until_closed(struct fixture *f, const char *block, size_t len,
				 useconds_t pause_us, double *ret_seconds)
{
	int fd = client_connect(f->path);
	double t0 = now_sec();
	char *reply;

	assert_true(fd >= 0);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	while (now_sec() - t0 < 5.0) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT | POLLIN};

		poll(&pfd, 1, 20);
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
			break;
		if (send(fd, block, len, MSG_NOSIGNAL) < 0 && errno != EAGAIN)
			break;
		if (pause_us)
			usleep(pause_us);
	}
	fcntl(fd, F_SETFL, 0);
	reply = read_all(fd, NULL);
	*ret_seconds = now_sec() - t0;
	close(fd);
	return reply;
}

/* A client streaming garbage is answered and hung up on; it never holds the loop. */
static void test_garbage_streams(void **state)
{
	struct fixture *f = *state;
	static const char lines[] = "frobnicate\nfrobnicate\nfrobnicate\nfrobnicate\n";
	char junk[4096], *reply;
	double seconds;
	int beats = atomic_load(&f->beats);

	/* Endless invalid lines: the first is refused, then the server hangs up. */
	reply = stream_until_closed(f, lines, sizeof(lines) - 1, 0, &seconds);
	assert_string_equal(reply, "error unknown command\n");
	assert_true(seconds < TEST_TIMEOUT_SEC);
	free(reply);

	/* Bytes with no newline: cut off at CONTROL_REQUEST_MAX, not at the timeout. */
	memset(junk, 0xfe, sizeof(junk));
	reply = stream_until_closed(f, junk, sizeof(junk), 0, &seconds);
	assert_string_equal(reply, "error request too long\n");
	assert_true(seconds < TEST_TIMEOUT_SEC);
	free(reply);

	/* A byte now and then does not stretch the timeout: it counts from the connect. */
	reply = stream_until_closed(f, "x", 1, 50000, &seconds);
	assert_string_equal(reply, "error timeout\n");
	assert_true(seconds > 0.9 * TEST_TIMEOUT_SEC);
	assert_true(seconds < TEST_TIMEOUT_SEC + 0.5);
	free(reply);

	assert_true(atomic_load(&f->beats) > beats + 20);
	expect_reply(f, "reload\n", "ok\n");
}

static void test_socket_file(void **state)
{
	struct fixture *f = *state;
	struct stat st;

	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_gid, getegid());
}

static void test_group(void **state)
{
	struct fixture *f = fixture_new();
	struct control_server *s = NULL;
	struct group *gr;
	struct stat st;
	gid_t gid;

	assert_int_equal(
	    control_server_create(f->loop, f->path, "no-such-group-moletun", &f->ops, &s), -EINVAL);
	assert_null(s);
	assert_int_equal(lstat(f->path, &st), -1);

	gr = getgrnam(geteuid() == 0 ? "daemon" : "");
	if (!gr)
		gr = getgrgid(getegid());
	assert_non_null(gr);
	gid = gr->gr_gid;
	assert_int_equal(control_server_create(f->loop, f->path, gr->gr_name, &f->ops, &s), 0);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_int_equal(st.st_gid, gid);
	assert_int_equal(st.st_mode & 07777, 0660);
	control_server_destroy(s);
	fixture_free(f);
}

static void test_stale_socket(void **state)
{
	struct fixture *f = fixture_new();
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct control_server *s = NULL, *second = NULL;
	char long_path[200];
	struct stat st;
	FILE *file;
	int fd;

	/* A socket left by a daemon that died: nobody listens, so it is replaced. */
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", f->path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	close(fd);
	assert_int_equal(chmod(f->path, 0777), 0);
	assert_int_equal(control_server_create(f->loop, f->path, NULL, &f->ops, &s), 0);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0660);

	/* A live daemon's socket is not stolen, and keeps working. */
	assert_int_equal(control_server_create(f->loop, f->path, NULL, &f->ops, &second),
			 -EADDRINUSE);
	assert_null(second);
	assert_int_equal(lstat(f->path, &st), 0);
	f->server = s;
	start_loop(f);
	expect_reply(f, "reload\n", "ok\n");
	stop_loop(f);
	f->server = NULL;

	/* A socket file that is no longer ours (replaced) is left alone on destroy. */
	assert_int_equal(unlink(f->path), 0);
	file = fopen(f->path, "w");
	assert_non_null(file);
	fputs("not a socket\n", file);
	fclose(file);
	control_server_destroy(s);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));

	/* Anything but a socket is refused, not deleted. */
	s = NULL;
	assert_int_equal(control_server_create(f->loop, f->path, NULL, &f->ops, &s), -EEXIST);
	assert_null(s);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	unlink(f->path);

	memset(long_path, 'p', sizeof(long_path) - 1);
	long_path[0] = '/';
	long_path[sizeof(long_path) - 1] = '\0';
	assert_int_equal(control_server_create(f->loop, long_path, NULL, &f->ops, &s),
			 -ENAMETOOLONG);
	assert_int_equal(
	    control_server_create(f->loop, "/nonexistent-dir/x.sock", NULL, &f->ops, &s), -ENOENT);
	assert_null(s);
	fixture_free(f);
}

/* A listening unix socket bound to path, as a previous daemon left it in the FD store. */
static int listening_at(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

static void test_adopt_inherited_socket(void **state)
{
	struct fixture *f = fixture_new();
	struct control_server *s = NULL;
	char other[128];
	struct stat st, before;
	int fd, impostor, queued;

	/* The inherited socket still answers on the path: served, path kept, mode fixed. */
	fd = listening_at(f->path);
	assert_int_equal(chmod(f->path, 0777), 0);
	assert_int_equal(lstat(f->path, &before), 0);
	/* A client that came while no daemon ran waits in the backlog: it is served. */
	queued = client_connect(f->path);
	assert_int_equal(control_server_adopt(f->loop, fd, f->path, NULL, &f->ops, &s), 0);
	assert_int_equal(control_server_fd(s), fd);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(st.st_ino == before.st_ino);
	assert_int_equal(st.st_mode & 07777, 0660);
	f->server = s;
	start_loop(f);
	send_all(queued, "reload\n", 7);
	{
		size_t len;
		char *reply = read_all(queued, &len);

		assert_string_equal(reply, "ok\n");
		free(reply);
	}
	close(queued);
	expect_reply(f, "reload\n", "ok\n");
	stop_loop(f);
	f->server = NULL;
	/* It lives on in the FD store: its file stays. */
	control_server_destroy(s);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(st.st_ino == before.st_ino);
	unlink(f->path);

	/* Bound to another path: refused, and the descriptor stays the caller's. */
	snprintf(other, sizeof(other), "%s/other.sock", f->dir);
	fd = listening_at(other);
	s = NULL;
	assert_int_equal(control_server_adopt(f->loop, fd, f->path, NULL, &f->ops, &s),
			 -EADDRNOTAVAIL);
	assert_null(s);
	assert_true(fcntl(fd, F_GETFD) >= 0);
	close(fd);
	unlink(other);

	/* Its file is gone (the runtime directory was emptied): refused. */
	fd = listening_at(f->path);
	unlink(f->path);
	assert_int_equal(control_server_adopt(f->loop, fd, f->path, NULL, &f->ops, &s), -ENOENT);

	/* The path now leads to another socket: refused, and that file is left alone. */
	impostor = listening_at(f->path);
	assert_int_equal(control_server_adopt(f->loop, fd, f->path, NULL, &f->ops, &s),
			 -EADDRINUSE);
	assert_null(s);
	assert_int_equal(lstat(f->path, &st), 0);
	close(fd);
	close(impostor);

	/*
	 * The same with a client waiting on the inherited socket (it connected before the
	 * path was taken over), so that socket is readable whatever the path leads to.
	 */
	unlink(f->path);
	fd = listening_at(f->path);
	queued = client_connect(f->path);
	assert_true(queued >= 0);
	unlink(f->path);
	impostor = listening_at(f->path);
	assert_int_equal(lstat(f->path, &before), 0);
	assert_int_equal(control_server_adopt(f->loop, fd, f->path, NULL, &f->ops, &s),
			 -EADDRINUSE);
	assert_null(s);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(st.st_ino == before.st_ino);
	assert_true(fcntl(fd, F_GETFD) >= 0);
	close(queued);
	close(fd);
	close(impostor);
	unlink(f->path);

	/* Not a listening socket. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(control_server_adopt(f->loop, fd, f->path, NULL, &f->ops, &s), -EINVAL);
	close(fd);
	fixture_free(f);
}

/*
 * In a child: become uid OTHER_UID with primary group `gid` and supplementary `groups`,
 * send `request`, and exit 0 if the reply starts with `expected` (or, when `expected` is
 * NULL, if connecting fails with EACCES).
 */
static int as_other_user(const char *path, gid_t gid, const gid_t *groups, size_t n_groups,
			 const char *request, const char *expected)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		char buf[256];
		ssize_t len, total = 0;
		int fd;

		if (setgroups(n_groups, groups) < 0 || setgid(gid) < 0 || setuid(OTHER_UID) < 0)
			_exit(10);
		fd = client_connect(path);
		if (!expected)
			_exit(fd == -EACCES ? 0 : 11);
		if (fd < 0)
			_exit(12);
		if (send(fd, request, strlen(request), MSG_NOSIGNAL) < 0)
			_exit(13);
		while ((len = recv(fd, buf + total, sizeof(buf) - 1 - (size_t)total, 0)) > 0)
			total += len;
		buf[total] = '\0';
		_exit(strncmp(buf, expected, strlen(expected)) == 0 ? 0 : 14);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_permissions(void **state)
{
	struct fixture *f = *state;
	gid_t control_gid = getegid(), other = OTHER_GID;

	if (geteuid() != 0) {
		print_message("needs root to switch users\n");
		skip();
	}
	/* 0660: a user outside the group cannot even connect. */
	assert_int_equal(as_other_user(f->path, OTHER_GID, NULL, 0, NULL, NULL), 0);

	/* Let everyone connect, to see that the server itself still guards mutations. */
	assert_int_equal(chmod(f->path, 0666), 0);
	assert_int_equal(as_other_user(f->path, OTHER_GID, &other, 1, "status\n", "ok tunnels=2"),
			 0);
	assert_int_equal(as_other_user(f->path, OTHER_GID, NULL, 0, "metrics\n", "ok\n# HELP"), 0);
	assert_int_equal(
	    as_other_user(f->path, OTHER_GID, &other, 1, "reload\n", "error permission denied\n"),
	    0);
	assert_int_equal(as_other_user(f->path, OTHER_GID, NULL, 0, "reconnect --all\n",
				       "error permission denied\n"),
			 0);
	assert_int_equal(f->fake.reloads, 0);
	assert_int_equal(f->fake.reconnects, 0);

	/* Membership of the control group, as primary or supplementary group, is enough. */
	assert_int_equal(as_other_user(f->path, control_gid, NULL, 0, "reload\n", "ok\n"), 0);
	assert_int_equal(as_other_user(f->path, OTHER_GID, &control_gid, 1, "reload\n", "ok\n"), 0);
	assert_int_equal(
	    as_other_user(f->path, OTHER_GID, &control_gid, 1, "reconnect t1\n", "ok\n"), 0);
	assert_int_equal(f->fake.reloads, 2);
	assert_int_equal(f->fake.reconnects, 1);

	/* Root (and the daemon's own uid, which root is here) may always. */
	expect_reply(f, "reload\n", "ok\n");
}

int ctl_main(int argc, char **argv);

struct ctl_result {
	int status;
	char *out, *err;
};

static char *read_file(FILE *file)
{
	long size;
	char *buf;

	fflush(file);
	size = ftell(file);
	assert_true(size >= 0);
	buf = calloc(1, (size_t)size + 1);
	assert_non_null(buf);
	rewind(file);
	assert_int_equal(fread(buf, 1, (size_t)size, file), (size_t)size);
	return buf;
}

/* Runs `moletun ctl ARGS...` in this process with stdout and stderr captured. */
static struct ctl_result run_ctl(const char *arg, ...)
{
	char *argv[16] = {"ctl"};
	int argc = 1, saved_out, saved_err;
	FILE *out = tmpfile(), *err = tmpfile();
	struct ctl_result r;
	va_list ap;

	assert_non_null(out);
	assert_non_null(err);
	va_start(ap, arg);
	for (; arg && argc < 15; arg = va_arg(ap, const char *))
		argv[argc++] = (char *)arg;
	va_end(ap);
	argv[argc] = NULL;
	fflush(stdout);
	fflush(stderr);
	saved_out = dup(STDOUT_FILENO);
	saved_err = dup(STDERR_FILENO);
	dup2(fileno(out), STDOUT_FILENO);
	dup2(fileno(err), STDERR_FILENO);
	r.status = ctl_main(argc, argv);
	fflush(stdout);
	fflush(stderr);
	dup2(saved_out, STDOUT_FILENO);
	dup2(saved_err, STDERR_FILENO);
	close(saved_out);
	close(saved_err);
	fseek(out, 0, SEEK_END);
	fseek(err, 0, SEEK_END);
	r.out = read_file(out);
	r.err = read_file(err);
	fclose(out);
	fclose(err);
	return r;
}

static void ctl_result_free(struct ctl_result *r)
{
	free(r->out);
	free(r->err);
}

static void expect_ctl(struct ctl_result r, int status, const char *out, const char *err)
{
	if (r.status != status)
		fail_msg("exit %d, expected %d; stdout '%s' stderr '%s'", r.status, status, r.out,
			 r.err);
	if (out)
		assert_string_equal(r.out, out);
	if (err)
		assert_string_equal(r.err, err);
	ctl_result_free(&r);
}

/* The body of a reply, as ctl should print it. */
static char *body_of(char *reply)
{
	char *lf = strchr(reply, '\n');

	assert_non_null(lf);
	return lf + 1;
}

static void test_ctl_status(void **state)
{
	struct fixture *f = *state;
	char *expected = expected_status(f, true, NULL);
	struct ctl_result r;

	/* t1 is in backoff: 3; t0 alone is up: 0. JSON is exactly what the daemon sent. */
	expect_ctl(run_ctl("-s", f->path, "status", "--json", NULL), 3, body_of(expected), "");
	free(expected);
	expected = expected_status(f, true, "t0");
	expect_ctl(run_ctl("-s", f->path, "status", "t0", "--json", NULL), 0, body_of(expected),
		   "");
	free(expected);
	r = run_ctl("--socket", f->path, "status", NULL);
	assert_int_equal(r.status, 3);
	assert_true(strncmp(r.out, "TUNNEL ", 7) == 0);
	assert_non_null(strstr(r.out, "\nt1 "));
	ctl_result_free(&r);
	expect_ctl(run_ctl("-s", f->path, "status", "t1", NULL), 3, NULL, "");
	expect_ctl(run_ctl("-s", f->path, "status", "nosuch", NULL), 1, "",
		   "moletun ctl: status: no such tunnel: nosuch\n");

	/* $MOLETUN_SOCKET when there is no -s; -s wins over it. */
	setenv("MOLETUN_SOCKET", f->path, 1);
	expect_ctl(run_ctl("status", "t0", NULL), 0, NULL, "");
	setenv("MOLETUN_SOCKET", "/nonexistent/moletun.sock", 1);
	expect_ctl(run_ctl("-s", f->path, "status", "t0", NULL), 0, NULL, "");
	unsetenv("MOLETUN_SOCKET");
}

static void test_ctl_commands(void **state)
{
	struct fixture *f = *state;
	struct ctl_result r;

	r = run_ctl("-s", f->path, "metrics", NULL);
	assert_int_equal(r.status, 0);
	assert_true(strncmp(r.out, "# HELP moletun_tunnel_up ", 25) == 0);
	ctl_result_free(&r);

	expect_ctl(run_ctl("-s", f->path, "reconnect", "t1", NULL), 0, "", "");
	assert_string_equal(f->fake.reconnected, "t1");
	expect_ctl(run_ctl("-s", f->path, "reconnect", "--all", NULL), 0, "", "");
	assert_string_equal(f->fake.reconnected, "--all");
	expect_ctl(run_ctl("-s", f->path, "reconnect", "nosuch", NULL), 1, "",
		   "moletun ctl: reconnect: no such tunnel: nosuch\n");

	expect_ctl(run_ctl("-s", f->path, "reload", NULL), 0, "", "");
	assert_int_equal(f->fake.reloads, 1);
	pthread_mutex_lock(&f->fake.lock);
	f->fake.reload_invalid = true;
	pthread_mutex_unlock(&f->fake.lock);
	expect_ctl(run_ctl("-s", f->path, "reload", NULL), 1, "",
		   "moletun ctl: reload: invalid configuration\n"
		   "/etc/moletun/moletun.conf:3: unknown key 'hots'\n"
		   "/etc/moletun/moletun.conf:9: tunnel 'x': host is required\n");
}

static void test_ctl_usage(void **state)
{
	struct fixture *f = *state;
	struct ctl_result r;

	r = run_ctl("-s", f->path, "frobnicate", NULL);
	assert_int_equal(r.status, 2);
	assert_string_equal(r.out, "");
	assert_true(strncmp(r.err, "moletun ctl: unknown command 'frobnicate'\nusage: ", 49) == 0);
	ctl_result_free(&r);
	expect_ctl(run_ctl("-s", f->path, NULL), 2, "", NULL);
	expect_ctl(run_ctl("-s", f->path, "reconnect", NULL), 2, "", NULL);
	expect_ctl(run_ctl("-s", f->path, "status", "a", "b", NULL), 2, "", NULL);
	expect_ctl(run_ctl("-s", f->path, "status", "--bogus", NULL), 2, "", NULL);
	expect_ctl(run_ctl("-s", f->path, "status", "two words", NULL), 2, "", NULL);
	expect_ctl(run_ctl("-x", NULL), 2, "", NULL);
	expect_ctl(run_ctl("-s", NULL), 2, "", NULL);
	r = run_ctl("help", NULL);
	assert_int_equal(r.status, 0);
	assert_true(strncmp(r.out, "usage: moletun ctl ", 19) == 0);
	ctl_result_free(&r);
	/* Usage errors never reach the daemon. */
	assert_int_equal(f->fake.reconnects, 0);
}

static void test_ctl_no_daemon(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char missing[96], stale[96], msg[512];
	int fd;

	snprintf(missing, sizeof(missing), "%s/missing.sock", f->dir);
	snprintf(msg, sizeof(msg),
		 "moletun ctl: cannot connect to %s: No such file or directory (is moletun "
		 "running?)\n",
		 missing);
	expect_ctl(run_ctl("-s", missing, "status", NULL), 1, "", msg);

	/* A socket left behind by a dead daemon: refused, with the same hint. */
	snprintf(stale, sizeof(stale), "%s/stale.sock", f->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", stale);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	close(fd);
	snprintf(msg, sizeof(msg),
		 "moletun ctl: cannot connect to %s: Connection refused (is moletun running?)\n",
		 stale);
	expect_ctl(run_ctl("-s", stale, "reload", NULL), 1, "", msg);
	unlink(stale);
}

/* A daemon that says "busy" to its first client and answers the second. */
struct busy_once {
	int listen_fd;
	char second_request[64];
};

static void *busy_once_thread(void *arg)
{
	struct busy_once *b = arg;
	ssize_t n;
	int fd;

	fd = accept(b->listen_fd, NULL, NULL);
	send(fd, "error busy\n", 11, MSG_NOSIGNAL);
	close(fd);
	fd = accept(b->listen_fd, NULL, NULL);
	n = recv(fd, b->second_request, sizeof(b->second_request) - 1, 0);
	b->second_request[n > 0 ? n : 0] = '\0';
	send(fd, "ok\n", 3, MSG_NOSIGNAL);
	close(fd);
	return NULL;
}

static void test_ctl_busy_and_mute_daemon(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fds[CONTROL_CLIENTS_MAX], mute;
	char path[96], msg[512];
	struct busy_once busy = {0};
	struct timespec t0, t1;
	pthread_t thread;

	/* Idle clients make way for ctl: the oldest of them is closed. */
	open_idle(f, fds, CONTROL_CLIENTS_MAX);
	expect_ctl(run_ctl("-s", f->path, "status", "t0", NULL), 0, NULL, "");
	expect_closed(fds[0], "error busy\n");
	for (size_t i = 0; i < CONTROL_CLIENTS_MAX; i++)
		close(fds[i]);

	/* Only when every client is being answered is ctl turned away. */
	for (size_t i = 0; i < CONTROL_CLIENTS_MAX; i++) {
		fds[i] = client_connect(f->path);
		send_all(fds[i], "alert-test\n", 11);
	}
	for (int spins = 0; fake_parked(&f->fake) < CONTROL_CLIENTS_MAX && spins < 500; spins++)
		usleep(10000);
	assert_int_equal(fake_parked(&f->fake), CONTROL_CLIENTS_MAX);
	expect_ctl(run_ctl("-s", f->path, "status", NULL), 1, "",
		   "moletun ctl: the daemon is busy (too many control clients); try again\n");
	stop_loop(f);
	fake_finish_parked(&f->fake);
	start_loop(f);
	for (size_t i = 0; i < CONTROL_CLIENTS_MAX; i++) {
		expect_closed(fds[i], ALERT_REPLY);
		close(fds[i]);
	}

	/* "busy" means the request was not read: ctl asks again, even to reload. */
	snprintf(path, sizeof(path), "%s/busy-once.sock", f->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	busy.listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(busy.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(busy.listen_fd, 4), 0);
	assert_int_equal(pthread_create(&thread, NULL, busy_once_thread, &busy), 0);
	expect_ctl(run_ctl("-s", path, "reload", NULL), 0, "", "");
	assert_int_equal(pthread_join(thread, NULL), 0);
	assert_string_equal(busy.second_request, "reload\n");
	close(busy.listen_fd);
	unlink(path);

	/* A daemon that accepts (in the backlog) but never answers: 5 s, then a clear error. */
	snprintf(path, sizeof(path), "%s/mute.sock", f->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	mute = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(mute, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(mute, 4), 0);
	snprintf(msg, sizeof(msg), "moletun ctl: timed out waiting for a reply from %s\n", path);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	expect_ctl(run_ctl("-s", path, "status", NULL), 1, "", msg);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_in_range(t1.tv_sec - t0.tv_sec, 4, 6);
	close(mute);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reconnect_and_reload, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_framing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_huge_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_clients_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_500_idle_clients, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_that_never_reads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eviction_order, setup_manual, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage_streams, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_socket_file, setup, teardown),
	    cmocka_unit_test(test_group),
	    cmocka_unit_test(test_stale_socket),
	    cmocka_unit_test(test_adopt_inherited_socket),
	    cmocka_unit_test_setup_teardown(test_permissions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ctl_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ctl_commands, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ctl_usage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ctl_no_daemon, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ctl_busy_and_mute_daemon, setup, teardown),
	};

	/* The server logs from its thread to stderr, which the ctl tests capture. */
	log_set_level(LOG_WARNING);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
