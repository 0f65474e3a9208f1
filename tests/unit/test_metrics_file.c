#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomicfile.h"
#include "log.h"
#include "metrics_file.h"
#include "status_format.h"
#include "util.h"

static char dir[] = "/tmp/test_metrics_file.XXXXXX";

static const char *path_in(const char *name)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

static char *slurp(const char *path)
{
	char *text;
	size_t len;

	assert_int_equal(read_file(path, 1 << 20, &text, &len), 0);
	return text;
}

/* Names in dir, sorted, separated by spaces. */
static void list_dir(char *buf, size_t size)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, alphasort);

	assert_true(n >= 0);
	buf[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (names[i]->d_name[0] != '.') {
			strncat(buf, names[i]->d_name, size - strlen(buf) - 1);
			strncat(buf, " ", size - strlen(buf) - 1);
		}
		free(names[i]);
	}
	free(names);
}

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(dir));
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	memcpy(dir + strlen(dir) - 6, "XXXXXX", 6);
	return 0;
}

static void test_replace(void **state)
{
	const char *path = path_in("m.prom");
	struct stat st;
	char names[256];
	char *text;

	(void)state;
	umask(077);
	assert_int_equal(atomicfile_replace(path, "a 1\n", 4, 0644), 0);
	assert_int_equal(stat(path, &st), 0);
	/* readable by node_exporter's user whatever the daemon's umask */
	assert_int_equal(st.st_mode & 07777, 0644);
	text = slurp(path);
	assert_string_equal(text, "a 1\n");
	free(text);
	assert_int_equal(atomicfile_replace(path, "b 2\n", 4, 0644), 0);
	text = slurp(path);
	assert_string_equal(text, "b 2\n");
	free(text);
	list_dir(names, sizeof(names));
	assert_string_equal(names, "m.prom ");
	umask(022);
}

static void test_replace_failures(void **state)
{
	char names[256];
	char *text;

	(void)state;
	assert_int_equal(atomicfile_replace(path_in("missing/m.prom"), "x", 1, 0644), -ENOENT);
	/* rename over a directory fails: the temporary file goes, the directory stays */
	assert_int_equal(mkdir(path_in("d.prom"), 0755), 0);
	assert_int_equal(atomicfile_replace(path_in("d.prom"), "x", 1, 0644), -EISDIR);
	list_dir(names, sizeof(names));
	assert_string_equal(names, "d.prom ");
	/* a file already there is left as it was when a write fails */
	assert_int_equal(atomicfile_replace(path_in("m.prom"), "old\n", 4, 0644), 0);
	assert_int_equal(chmod(dir, 0555), 0);
	if (geteuid() != 0) {
		assert_int_equal(atomicfile_replace(path_in("m.prom"), "new\n", 4, 0644), -EACCES);
		text = slurp(path_in("m.prom"));
		assert_string_equal(text, "old\n");
		free(text);
	}
	assert_int_equal(chmod(dir, 0755), 0);
}

static void fill_status(struct status *s)
{
	struct status_tunnel *t;
	struct status_forward *f;

	memset(s, 0, sizeof(*s));
	s->n_tunnels = 1;
	s->tunnels = calloc(1, sizeof(*s->tunnels));
	assert_non_null(s->tunnels);
	t = &s->tunnels[0];
	snprintf(t->name, sizeof(t->name), "primary");
	t->state = TUNNEL_UP;
	t->health = HEALTH_OK;
	t->rtt_measured = true;
	t->rtt = 0.012;
	t->since.tv_sec = 1714564800;
	t->reconnects = 7;
	t->n_forwards = 1;
	t->forwards = calloc(1, sizeof(*t->forwards));
	assert_non_null(t->forwards);
	f = &t->forwards[0];
	f->kind = FORWARD_LOCAL;
	snprintf(f->listen, sizeof(f->listen), "127.0.0.1:5433");
	snprintf(f->target, sizeof(f->target), "pg_main:5432");
	f->target_state = TARGET_REACHABLE;
	f->connections_total = 3;
}

static char *render(const struct status *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	assert_non_null(out);
	assert_int_equal(status_format_metrics(s, out), 0);
	assert_int_equal(fclose(out), 0);
	return text;
}

static void test_mark_stopped(void **state)
{
	struct status s;
	struct timespec now = {.tv_sec = 1714568400};
	char *text;

	(void)state;
	fill_status(&s);
	text = render(&s);
	assert_non_null(strstr(text, "moletun_tunnel_up{tunnel=\"primary\"} 1\n"));
	assert_non_null(strstr(text, "moletun_tunnel_rtt_seconds{tunnel=\"primary\"}"));
	assert_non_null(strstr(text, "moletun_forward_target_up{"));
	free(text);

	metrics_mark_stopped(&s, now);
	text = render(&s);
	assert_non_null(strstr(text, "moletun_tunnel_up{tunnel=\"primary\"} 0\n"));
	assert_non_null(
	    strstr(text, "moletun_tunnel_health{tunnel=\"primary\",health=\"ok\"} 0\n"));
	assert_non_null(
	    strstr(text, "moletun_tunnel_health{tunnel=\"primary\",health=\"down\"} 1\n"));
	assert_non_null(
	    strstr(text, "moletun_tunnel_state_since_seconds{tunnel=\"primary\"} 1714568400\n"));
	/* counters are kept; what is no longer known disappears */
	assert_non_null(strstr(text, "moletun_tunnel_reconnects_total{tunnel=\"primary\"} 7\n"));
	assert_null(strstr(text, "moletun_tunnel_rtt_seconds{"));
	assert_null(strstr(text, "moletun_forward_target_up{"));
	free(text);
	status_free(&s);
}

struct stale_calls {
	int n;
	bool stale;
	char reason[512];
	double for_seconds;
};

struct fake_daemon {
	int snapshots;
	int fail; /* errno to fail snapshots with */
	struct ev_loop *loop;
	ev_timer stop;
	struct stale_calls *stale_calls;
};

static int fake_snapshot(void *userdata, struct status *ret)
{
	struct fake_daemon *d = userdata;

	if (d->fail)
		return -d->fail;
	fill_status(ret);
	ret->tunnels[0].reconnects = (uint64_t)++d->snapshots;
	return 0;
}

static void on_stop(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static void run_for(struct fake_daemon *d, double seconds)
{
	ev_timer_init(&d->stop, on_stop, seconds, 0.);
	ev_timer_start(d->loop, &d->stop);
	ev_run(d->loop, 0);
}

static void test_rewritten_every_interval(void **state)
{
	struct fake_daemon d = {.loop = ev_loop_new(EVFLAG_AUTO)};
	const char *path = path_in("moletun.prom");
	struct metrics_file *m;
	char names[256];
	char *text;

	(void)state;
	assert_int_equal(metrics_file_create(d.loop, path, 100, fake_snapshot, NULL, &d, &m), 0);
	assert_string_equal(metrics_file_path(m), path);
	assert_int_equal(metrics_file_interval(m), 100);
	run_for(&d, 0.55);
	/* at once, then every 100 ms: about 6 writes, at least 3 on a loaded machine */
	assert_in_range(d.snapshots, 3, 7);
	text = slurp(path);
	assert_non_null(strstr(text, "moletun_tunnel_up{tunnel=\"primary\"} 1\n"));
	free(text);

	/* a failed snapshot leaves the last file in place */
	d.fail = ENOMEM;
	assert_int_equal(metrics_file_write(m), -ENOMEM);
	text = slurp(path);
	assert_non_null(strstr(text, "moletun_tunnel_up{tunnel=\"primary\"} 1\n"));
	free(text);

	d.fail = 0;
	assert_int_equal(metrics_file_write_stopped(m), 0);
	text = slurp(path);
	assert_non_null(strstr(text, "moletun_tunnel_up{tunnel=\"primary\"} 0\n"));
	free(text);
	metrics_file_destroy(m);
	list_dir(names, sizeof(names));
	assert_string_equal(names, "moletun.prom ");
	ev_loop_destroy(d.loop);
}

static void test_failures_are_not_fatal(void **state)
{
	struct fake_daemon d = {.loop = ev_loop_new(EVFLAG_AUTO)};
	struct metrics_file *m;
	char *text;

	(void)state;
	assert_int_equal(
	    metrics_file_create(d.loop, path_in("later/m.prom"), 100, fake_snapshot, NULL, &d, &m),
	    0);
	run_for(&d, 0.25);
	assert_true(d.snapshots >= 2);
	assert_int_equal(metrics_file_write(m), -ENOENT);
	/* once the directory appears, the next write succeeds */
	assert_int_equal(mkdir(path_in("later"), 0755), 0);
	assert_int_equal(metrics_file_write(m), 0);
	text = slurp(path_in("later/m.prom"));
	assert_non_null(strstr(text, "# TYPE moletun_tunnel_up gauge\n"));
	free(text);
	metrics_file_destroy(m);
	metrics_file_destroy(NULL);
	ev_loop_destroy(d.loop);
}

static void record_stale(void *userdata, bool stale, const char *reason, double for_seconds)
{
	struct stale_calls *calls = ((struct fake_daemon *)userdata)->stale_calls;

	calls->n++;
	calls->stale = stale;
	snprintf(calls->reason, sizeof(calls->reason), "%s", reason);
	calls->for_seconds = for_seconds;
}

/* Three failed writes in a row make the file stale (told once), a success fresh again. */
static void test_stale_after_three_failed_writes(void **state)
{
	struct stale_calls calls = {0};
	struct fake_daemon d = {.loop = ev_loop_new(EVFLAG_AUTO), .stale_calls = &calls};
	struct metrics_file *m;

	(void)state;
	assert_int_equal(metrics_file_create(d.loop, path_in("later/m.prom"), 100, fake_snapshot,
					     record_stale, &d, &m),
			 0);
	/* two failures and a success: never stale */
	assert_int_equal(metrics_file_write(m), -ENOENT);
	assert_int_equal(metrics_file_write(m), -ENOENT);
	assert_int_equal(mkdir(path_in("later"), 0755), 0);
	assert_int_equal(metrics_file_write(m), 0);
	assert_int_equal(rmdir(path_in("later")), -1); /* the file is in it */
	assert_int_equal(unlink(path_in("later/m.prom")), 0);
	assert_int_equal(rmdir(path_in("later")), 0);
	assert_int_equal(metrics_file_write(m), -ENOENT);
	assert_int_equal(metrics_file_write(m), -ENOENT);
	assert_int_equal(calls.n, 0);
	assert_false(metrics_file_stale(m));
	assert_int_equal(metrics_file_last_error(m), -ENOENT);

	/* the third in a row */
	assert_int_equal(metrics_file_write(m), -ENOENT);
	assert_int_equal(calls.n, 1);
	assert_true(calls.stale);
	assert_true(metrics_file_stale(m));
	assert_non_null(strstr(calls.reason, path_in("later/m.prom")));
	assert_non_null(strstr(calls.reason, "No such file or directory"));
	assert_true(calls.for_seconds > 0.29 && calls.for_seconds < 0.31);
	assert_int_equal(metrics_file_write(m), -ENOENT);
	assert_int_equal(calls.n, 1);

	/* written again: fresh, told once */
	assert_int_equal(mkdir(path_in("later"), 0755), 0);
	assert_int_equal(metrics_file_write(m), 0);
	assert_int_equal(calls.n, 2);
	assert_false(calls.stale);
	assert_false(metrics_file_stale(m));
	assert_int_equal(metrics_file_last_error(m), 0);
	assert_true(calls.for_seconds > 0.39 && calls.for_seconds < 0.41);
	assert_int_equal(metrics_file_write(m), 0);
	assert_int_equal(calls.n, 2);

	/* the last write at shutdown tells nobody */
	assert_int_equal(unlink(path_in("later/m.prom")), 0);
	assert_int_equal(rmdir(path_in("later")), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(metrics_file_write_stopped(m), -ENOENT);
	assert_int_equal(calls.n, 2);
	metrics_file_destroy(m);
	ev_loop_destroy(d.loop);
}

/*
 * A sticky directory every user may write to (/tmp) where another user created the file
 * first: the rename over it fails (the sticky bit forbids it) and says so, the file stays
 * that user's, no temporary file is left. Run as `nobody` in a child, as the daemon runs
 * as its own user (root would be allowed).
 */
static void test_sticky_directory_foreign_file(void **state)
{
	char path[256];
	struct dirent **names;
	struct stat st;
	char *text;
	pid_t pid;
	int status, n;

	(void)state;
	snprintf(path, sizeof(path), "%s", path_in("tmp/m.prom"));
	if (geteuid() != 0) {
		print_message("not root: cannot plant another user's file, skipped\n");
		return;
	}
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(mkdir(path_in("tmp"), 0755), 0);
	assert_int_equal(chmod(path_in("tmp"), 01777), 0);
	assert_int_equal(atomicfile_replace(path, "planted 1\n", 10, 0644), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		_exit(atomicfile_replace(path, "moletun 1\n", 10, 0644) == -EPERM ? 0 : 11);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 0);
	text = slurp(path);
	assert_string_equal(text, "planted 1\n");
	free(text);
	n = scandir(path_in("tmp"), &names, NULL, alphasort);
	assert_int_equal(n, 3); /* ., .. and m.prom: no temporary file left */
	for (int i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_replace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replace_failures, setup, teardown),
	    cmocka_unit_test(test_mark_stopped),
	    cmocka_unit_test_setup_teardown(test_rewritten_every_interval, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failures_are_not_fatal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_after_three_failed_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sticky_directory_foreign_file, setup, teardown),
	};

	log_init(LOG_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
