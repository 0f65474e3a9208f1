#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

#define LINE_MAX_BYTES 2048

/*
 * The daemon's output: a bounded queue in front of a descriptor that never blocks.
 * Under systemd stderr is a stream socket to journald (send with MSG_DONTWAIT); a pipe or
 * terminal is reopened through /proc with O_NONBLOCK, a new open file description, so
 * whoever else shares our stderr keeps a blocking one; a regular file is written as is.
 */
static struct {
	int max_level;
	bool journal;
	bool queued;	/* log_init() was called: the daemon's non-blocking mode */
	int fd;		/* where queued output goes; -1: stderr is closed, discard */
	bool own_fd;	/* fd is our reopened copy of stderr */
	bool is_socket; /* send(MSG_DONTWAIT) */
	bool gated;	/* could not reopen: write only what poll() says fits */
	char *queue;
	size_t off, len; /* queue[off, len) waits for the reader */
	uint64_t dropped;
	struct ev_loop *loop;
	ev_io writable;
} lg = {.max_level = LOG_INFO, .fd = -1};

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg",   [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
	[LOG_ERR] = "err",       [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info",     [LOG_DEBUG] = "debug",
};

static void log_output_open(void)
{
	struct stat st;
	int fd;

	lg.fd = -1;
	lg.own_fd = lg.is_socket = lg.gated = false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return;
	lg.fd = STDERR_FILENO;
	if (S_ISSOCK(st.st_mode)) {
		lg.is_socket = true;
	} else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
		fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd >= 0) {
			lg.fd = fd;
			lg.own_fd = true;
		} else {
			lg.gated = true;
		}
	}
}

void log_init(int max_priority)
{
	lg.max_level = max_priority;
	lg.journal = getenv("JOURNAL_STREAM") != NULL;
	if (!lg.queued) {
		log_output_open();
		lg.queued = true;
	}
}

static void log_flush(void);

static void writable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	log_flush();
}

void log_attach(struct ev_loop *loop)
{
	if (!loop || !lg.queued || lg.loop || lg.fd < 0)
		return;
	lg.loop = loop;
	ev_io_init(&lg.writable, writable_cb, lg.fd, EV_WRITE);
	log_flush();
}

void log_detach(void)
{
	if (lg.loop)
		ev_io_stop(lg.loop, &lg.writable);
	lg.loop = NULL;
}

void log_set_level(int max_priority)
{
	lg.max_level = max_priority;
}

int log_get_level(void)
{
	return lg.max_level;
}

int log_level_from_str(const char *s)
{
	for (int p = LOG_ERR; p <= LOG_DEBUG; p++)
		if (strcmp(s, level_names[p]) == 0)
			return p;
	return -1;
}

const char *log_level_str(int priority)
{
	if (priority < LOG_EMERG || priority > LOG_DEBUG)
		return "?";
	return level_names[priority];
}

uint64_t log_dropped(void)
{
	return lg.dropped;
}

/* One write that never blocks: bytes taken, or -errno (-EAGAIN when full). */
static ssize_t output_write(const char *p, size_t n)
{
	ssize_t w;

	if (lg.gated) {
		struct pollfd pfd = {.fd = lg.fd, .events = POLLOUT};

		if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLOUT))
			return -EAGAIN;
		/* A pipe with a free slot takes PIPE_BUF bytes without blocking. */
		if (n > PIPE_BUF)
			n = PIPE_BUF;
	}
	if (lg.is_socket)
		w = send(lg.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	else
		w = write(lg.fd, p, n);
	if (w < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return w;
}

static size_t format_line(char *out, size_t size, int priority, const char *text)
{
	int n;

	if (lg.journal) {
		n = snprintf(out, size, "<%d>%s\n", priority, text);
	} else {
		struct timespec ts = clock_wall();
		struct tm tm;
		char stamp[32];

		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		n = snprintf(out, size, "%s.%03ldZ %s: %s\n", stamp, ts.tv_nsec / 1000000,
			     log_level_str(priority), text);
	}
	if (n < 0)
		return 0;
	if ((size_t)n >= size) {
		/* cut, but still one line */
		out[size - 2] = '\n';
		return size - 1;
	}
	return (size_t)n;
}

/* Appends whole lines only, so a reader never sees half of one. */
static bool queue_append(const char *line, size_t n)
{
	if (!lg.queue) {
		lg.queue = malloc(LOG_QUEUE_BYTES);
		if (!lg.queue)
			return false;
	}
	if (lg.len + n > LOG_QUEUE_BYTES && lg.off > 0) {
		memmove(lg.queue, lg.queue + lg.off, lg.len - lg.off);
		lg.len -= lg.off;
		lg.off = 0;
	}
	if (lg.len + n > LOG_QUEUE_BYTES)
		return false;
	memcpy(lg.queue + lg.len, line, n);
	lg.len += n;
	return true;
}

/* Queues "N log lines dropped" when there is room for it and `also` bytes after it. */
static void queue_dropped_notice(size_t also)
{
	char text[96], line[160];
	size_t n;

	if (!lg.dropped)
		return;
	snprintf(text, sizeof(text), "%" PRIu64 " log lines dropped (the log reader was stalled)",
		 lg.dropped);
	n = format_line(line, sizeof(line), LOG_WARNING, text);
	if (lg.len - lg.off + n + also > LOG_QUEUE_BYTES)
		return;
	if (queue_append(line, n))
		lg.dropped = 0;
}

static void log_flush(void)
{
	while (lg.off < lg.len) {
		ssize_t w = output_write(lg.queue + lg.off, lg.len - lg.off);

		if (w == -EINTR)
			continue;
		if (w == -EAGAIN) {
			if (lg.loop && !ev_is_active(&lg.writable))
				ev_io_start(lg.loop, &lg.writable);
			return;
		}
		if (w <= 0) {
			/* The reader is gone for good (EPIPE): nothing to wait for. */
			lg.off = lg.len = 0;
			break;
		}
		lg.off += (size_t)w;
		if (lg.off == lg.len) {
			lg.off = lg.len = 0;
			queue_dropped_notice(0);
		}
	}
	lg.off = lg.len = 0;
	if (lg.loop)
		ev_io_stop(lg.loop, &lg.writable);
}

void log_finish(double wait_seconds)
{
	double start;

	log_detach();
	start = clock_now();
	while (lg.queued && lg.fd >= 0 && lg.off < lg.len) {
		struct pollfd pfd = {.fd = lg.fd, .events = POLLOUT};
		double left = wait_seconds - (clock_now() - start);

		if (left <= 0 || poll(&pfd, 1, (int)(left * 1000) + 1) < 0)
			break;
		log_flush();
	}
	free(lg.queue);
	lg.queue = NULL;
	lg.off = lg.len = 0;
	if (lg.own_fd)
		close(lg.fd);
	lg.fd = -1;
	lg.queued = false;
	lg.journal = false;
}

void log_msg(int priority, const char *fmt, ...)
{
	char text[LINE_MAX_BYTES], line[LINE_MAX_BYTES + 64];
	va_list ap;
	size_t n;

	if (priority > lg.max_level)
		return;
	va_start(ap, fmt);
	if (vsnprintf(text, sizeof(text), fmt, ap) < 0)
		text[0] = '\0';
	va_end(ap);
	n = format_line(line, sizeof(line), priority, text);
	if (!lg.queued) {
		/* Not the daemon (or before log_init): plain blocking stderr. */
		fwrite(line, 1, n, stderr);
		fflush(stderr);
		return;
	}
	if (lg.fd < 0)
		return;
	queue_dropped_notice(n);
	if (!queue_append(line, n)) {
		lg.dropped++;
		return;
	}
	if (!lg.loop || !ev_is_active(&lg.writable))
		log_flush();
}
