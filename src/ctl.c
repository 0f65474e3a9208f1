#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "control_proto.h"
#include "ctl.h"

#define CTL_TIMEOUT_MS 5000
/* "error busy" is asked again this many times, after 10, 20, 40 and 80 ms */
#define CTL_BUSY_RETRIES  4
#define CTL_BUSY_PAUSE_MS 10
/* alert-test waits for webhooks: longer than the daemon's own bound on it */
#define CTL_ALERT_TEST_TIMEOUT_MS 30000

/* Exit codes: 0 done (all shown tunnels up), 1 error, 2 usage, 3 some tunnel not up. */
enum {
	CTL_EXIT_OK = 0,
	CTL_EXIT_ERROR = 1,
	CTL_EXIT_USAGE = 2,
	CTL_EXIT_NOT_UP = 3,
	CTL_EXIT_UNHEALTHY = 4,
};

void ctl_print_usage(FILE *out)
{
	fputs("usage: moletun ctl [-s SOCKET] COMMAND [ARGS]\n", out);
	control_commands_print(out);
	fputs("Exit status: 0 done, 1 error (the daemon's reason on stderr), 2 usage, 3 and 4\n"
	      "as status says.\n"
	      "SOCKET defaults to $MOLETUN_SOCKET, then " CONFIG_DEFAULT_CONTROL_SOCKET ".\n",
	      out);
}

__attribute__((format(printf, 1, 2))) static int ctl_usage(const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		fputs("moletun ctl: ", stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	ctl_print_usage(stderr);
	return CTL_EXIT_USAGE;
}

/* Builds the request from argv; returns 0 or the exit status of a usage error. */
static int ctl_build_request(int argc, char **argv, struct control_request *ret)
{
	char line[CONTROL_REQUEST_MAX];
	const char *error;
	size_t len = 0;

	for (int i = 0; i < argc; i++) {
		size_t n = strlen(argv[i]);

		if (n == 0 || strpbrk(argv[i], " \t\r\n"))
			return ctl_usage("invalid argument '%s'", argv[i]);
		if (len + n + 1 >= sizeof(line))
			return ctl_usage("argument too long: '%s'", argv[i]);
		if (i > 0)
			line[len++] = ' ';
		memcpy(line + len, argv[i], n);
		len += n;
	}
	if (control_request_parse(line, len, ret, &error) < 0) {
		if (strcmp(error, "unknown command") == 0)
			return ctl_usage("unknown command '%s'", argv[0]);
		return ctl_usage("%s", error);
	}
	return 0;
}

static int ctl_connect(const char *path, int *ret_fd)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = CTL_TIMEOUT_MS / 1000};
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "moletun ctl: socket path too long: %s\n", path);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "moletun ctl: socket: %s\n", strerror(errno));
		return -errno;
	}
	/* Linux bounds a Unix connect() to a full backlog, and send(), by SO_SNDTIMEO. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int err = errno;

		if (err == EAGAIN || err == EWOULDBLOCK || err == EINPROGRESS)
			fprintf(stderr, "moletun ctl: cannot connect to %s: timed out\n", path);
		else
			fprintf(stderr, "moletun ctl: cannot connect to %s: %s%s\n", path,
				strerror(err),
				err == ENOENT || err == ECONNREFUSED ? " (is moletun running?)"
								     : "");
		close(fd);
		return -err;
	}
	*ret_fd = fd;
	return 0;
}

/* Returns 0 or -errno; the caller reports, as a refusal may still carry a reply. */
static int ctl_send(int fd, const char *buf)
{
	size_t len = strlen(buf), sent = 0;

	while (sent < len) {
		ssize_t n = send(fd, buf + sent, len - sent, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		sent += (size_t)n;
	}
	return 0;
}

/* Reads the whole reply (until EOF) within the deadline into a NUL-terminated buffer. */
static int ctl_receive(int fd, const char *path, int64_t deadline, char **ret, size_t *ret_len)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - clock_now_ms();
		ssize_t n;

		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			fprintf(stderr, "moletun ctl: timed out waiting for a reply from %s\n",
				path);
			free(buf);
			return -ETIMEDOUT;
		}
		if (len + 1 == cap) {
			char *bigger;

			if (cap > CONTROL_REPLY_MAX + CONTROL_REQUEST_MAX) {
				fprintf(stderr, "moletun ctl: reply from %s too large\n", path);
				free(buf);
				return -EMSGSIZE;
			}
			bigger = realloc(buf, cap * 2);
			if (!bigger) {
				free(buf);
				return -ENOMEM;
			}
			buf = bigger;
			cap *= 2;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		/* A server that closed with our input unread resets: what it sent is all. */
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			break;
		if (n < 0) {
			fprintf(stderr, "moletun ctl: reading from %s: %s\n", path,
				strerror(errno));
			free(buf);
			return -errno;
		}
		len += (size_t)n;
	}
	buf[len] = '\0';
	*ret = buf;
	*ret_len = len;
	return 0;
}

static int ctl_report_error(const struct control_request *req, const struct control_reply_header *h,
			    const char *body, size_t len)
{
	const char *command = control_command_str(req->command);

	if (strcmp(h->message, "busy") == 0)
		fprintf(stderr, "moletun ctl: the daemon is busy (too many control clients); "
				"try again\n");
	else if (strcmp(h->message, "permission denied") == 0)
		fprintf(stderr,
			"moletun ctl: %s: permission denied (needs root or membership of the "
			"control group)\n",
			command);
	else
		fprintf(stderr, "moletun ctl: %s: %s\n", command, h->message);
	fwrite(body, 1, len, stderr);
	return CTL_EXIT_ERROR;
}

/* One connection: sends `line`, reads the reply until EOF. Returns 0 or -errno (reported). */
static int ctl_exchange(const char *path, const char *line, int64_t deadline, char **ret,
			size_t *ret_len)
{
	int fd = -1, r;

	r = ctl_connect(path, &fd);
	if (r < 0)
		return r;
	/* A busy daemon answers and closes at once: EPIPE here, its reply still to read. */
	r = ctl_send(fd, line);
	if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
		fprintf(stderr, "moletun ctl: sending to %s: %s\n", path,
			r == -EAGAIN ? "timed out" : strerror(-r));
		close(fd);
		return r;
	}
	r = ctl_receive(fd, path, deadline, ret, ret_len);
	close(fd);
	return r;
}

static bool reply_is_busy(const char *reply, size_t len)
{
	static const char busy[] = "error busy\n";

	return len >= sizeof(busy) - 1 && memcmp(reply, busy, sizeof(busy) - 1) == 0;
}

static int ctl_run(const char *path, const struct control_request *req)
{
	char line[CONTROL_REQUEST_MAX];
	struct control_reply_header h;
	int64_t deadline =
	    clock_now_ms() +
	    (req->command == CONTROL_ALERT_TEST ? CTL_ALERT_TEST_TIMEOUT_MS : CTL_TIMEOUT_MS);
	char *reply = NULL, *lf;
	size_t reply_len = 0, header_len, body_len;
	int status = CTL_EXIT_ERROR, pause_ms = CTL_BUSY_PAUSE_MS;

	if (control_request_format(req, line, sizeof(line)) < 0)
		return ctl_usage("request too long");
	/*
	 * "busy" means the daemon closed the connection without reading the request: all its
	 * slots were answering, or a flood of idle connections pushed this one out before it
	 * had sent. Nothing was done, so asking again is safe, even for reload.
	 */
	for (int attempt = 0;; attempt++, pause_ms *= 2) {
		if (ctl_exchange(path, line, deadline, &reply, &reply_len) < 0)
			return CTL_EXIT_ERROR;
		if (attempt == CTL_BUSY_RETRIES || !reply_is_busy(reply, reply_len) ||
		    clock_now_ms() + pause_ms >= deadline)
			break;
		free(reply);
		reply = NULL;
		usleep((useconds_t)pause_ms * 1000);
	}
	lf = memchr(reply, '\n', reply_len);
	if (!lf) {
		fprintf(stderr, "moletun ctl: %s closed the connection without a %s\n", path,
			reply_len ? "complete reply" : "reply");
		goto out;
	}
	header_len = (size_t)(lf - reply);
	body_len = reply_len - header_len - 1;
	if (control_reply_header_parse(reply, header_len, &h) < 0) {
		fprintf(stderr, "moletun ctl: malformed reply from %s\n", path);
		goto out;
	}
	if (!h.ok) {
		status = ctl_report_error(req, &h, lf + 1, body_len);
		goto out;
	}
	if (fwrite(lf + 1, 1, body_len, stdout) != body_len || fflush(stdout) != 0) {
		fprintf(stderr, "moletun ctl: writing output: %s\n", strerror(errno));
		goto out;
	}
	status = CTL_EXIT_OK;
	if (req->command == CONTROL_STATUS && h.tunnels >= 0 && h.up >= 0 && h.up < h.tunnels)
		status = CTL_EXIT_NOT_UP;
	else if (req->command == CONTROL_STATUS && h.tunnels >= 0 && h.healthy >= 0 &&
		 h.healthy < h.tunnels)
		status = CTL_EXIT_UNHEALTHY;
	if (req->command == CONTROL_ALERT_TEST && h.failed > 0)
		status = CTL_EXIT_ERROR;
out:
	free(reply);
	return status;
}

int ctl_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = getenv("MOLETUN_SOCKET");
	struct control_request req;
	int opt, r;

	if (!path || !path[0])
		path = CONFIG_DEFAULT_CONTROL_SOCKET;
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+s:h", longopts, NULL)) != -1) {
		if (opt == 's') {
			path = optarg;
		} else if (opt == 'h') {
			ctl_print_usage(stdout);
			return CTL_EXIT_OK;
		} else {
			return ctl_usage("bad option '%s'", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return ctl_usage("missing command");
	if (strcmp(argv[optind], "help") == 0) {
		ctl_print_usage(stdout);
		return CTL_EXIT_OK;
	}
	r = ctl_build_request(argc - optind, argv + optind, &req);
	if (r)
		return r;
	return ctl_run(path, &req);
}
