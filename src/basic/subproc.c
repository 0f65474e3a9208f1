#include "subproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"

/* One output stream of the child being read. */
struct capture {
	int fd; /* -1 once at EOF */
	char *buf;
	size_t len;
};

void subproc_spawn_init(posix_spawn_file_actions_t *actions, posix_spawnattr_t *attr, int stdout_fd,
			int stderr_fd)
{
	sigset_t none, all;

	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(actions);
	posix_spawnattr_init(attr);
	posix_spawn_file_actions_addopen(actions, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(actions, stdout_fd, 1);
	posix_spawn_file_actions_adddup2(actions, stderr_fd, 2);
	posix_spawn_file_actions_addclosefrom_np(actions, 3);
	posix_spawnattr_setsigmask(attr, &none);
	posix_spawnattr_setsigdefault(attr, &all);
	posix_spawnattr_setpgroup(attr, 0);
	posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
					   POSIX_SPAWN_SETPGROUP);
}

void subproc_spawn_finish(posix_spawn_file_actions_t *actions, posix_spawnattr_t *attr)
{
	posix_spawnattr_destroy(attr);
	posix_spawn_file_actions_destroy(actions);
}

static int spawn(char *const argv[], char *const envp[], int out_fd, int err_fd, pid_t *ret_pid)
{
	posix_spawn_file_actions_t actions;
	posix_spawnattr_t attr;
	int r;

	subproc_spawn_init(&actions, &attr, out_fd, err_fd);
	/* glibc reports a failed exec (ENOENT, EACCES) here rather than as an exit status */
	r = posix_spawnp(ret_pid, argv[0], &actions, &attr, argv, envp);
	subproc_spawn_finish(&actions, &attr);
	return -r;
}

/* Appends what `c->fd` has to c->buf; -EOVERFLOW past `room` bytes, -ENOMEM. */
static int capture_read(struct capture *c, size_t room)
{
	char chunk[4096], *grown;
	ssize_t n = read(c->fd, chunk, sizeof(chunk));

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0) {
		close(c->fd);
		c->fd = -1;
		return 0;
	}
	if ((size_t)n > room)
		return -EOVERFLOW;
	grown = realloc(c->buf, c->len + (size_t)n + 1);
	if (!grown)
		return -ENOMEM;
	c->buf = grown;
	memcpy(c->buf + c->len, chunk, (size_t)n);
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	return 0;
}

/* Reads both streams to EOF; -ETIMEDOUT at the deadline, -EOVERFLOW past max_output. */
static int capture_all(struct capture c[2], int64_t deadline_ms, size_t max_output)
{
	while (c[0].fd >= 0 || c[1].fd >= 0) {
		struct pollfd p[2] = {{.fd = c[0].fd, .events = POLLIN},
				      {.fd = c[1].fd, .events = POLLIN}};
		int64_t left = deadline_ms - clock_now_ms();

		if (left <= 0)
			return -ETIMEDOUT;
		/* a negative fd is left out by poll(), and read no more here */
		if (poll(p, 2, (int)(left > 1000 ? 1000 : left)) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (size_t i = 0; i < 2; i++) {
			int r;

			if (c[i].fd < 0 || !p[i].revents)
				continue;
			r = capture_read(&c[i], max_output - c[0].len - c[1].len);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static void wait_child(pid_t pid, int *ret_status)
{
	while (waitpid(pid, ret_status, 0) < 0 && errno == EINTR)
		;
}

int subproc_run(char *const argv[], char *const envp[], uint64_t timeout_ms, size_t max_output,
		struct subproc_result *ret)
{
	struct capture c[2] = {{.fd = -1}, {.fd = -1}};
	struct subproc_result res;
	int out[2] = {-1, -1}, err[2] = {-1, -1}, status = 0, r;
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	r = spawn(argv, envp, out[1], err[1], &pid);
	if (r < 0)
		goto fail;
	close(out[1]);
	close(err[1]);
	c[0].fd = out[0];
	c[1].fd = err[0];
	r = capture_all(c, clock_now_ms() + (int64_t)timeout_ms, max_output);
	if (r < 0)
		kill(-pid, SIGKILL);
	wait_child(pid, &status);
	for (size_t i = 0; i < 2; i++)
		if (c[i].fd >= 0)
			close(c[i].fd);
	if (r < 0 && r != -ETIMEDOUT && r != -EOVERFLOW) {
		free(c[0].buf);
		free(c[1].buf);
		return r;
	}
	res = (struct subproc_result){
	    .out = c[0].buf ? c[0].buf : strdup(""),
	    .out_len = c[0].len,
	    .err = c[1].buf ? c[1].buf : strdup(""),
	    .err_len = c[1].len,
	    .status = status,
	    .timed_out = r == -ETIMEDOUT,
	    .too_long = r == -EOVERFLOW,
	};
	if (!res.out || !res.err) {
		subproc_result_free(&res);
		return -ENOMEM;
	}
	*ret = res;
	return 0;
fail:
	for (size_t i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (err[i] >= 0)
			close(err[i]);
	}
	return r;
}

void subproc_result_free(struct subproc_result *r)
{
	free(r->out);
	free(r->err);
	memset(r, 0, sizeof(*r));
}
