#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define RECONNECT_SEC 1.0 /* the manager's socket was gone: try again this often */

enum msg_kind {
	MSG_READY,
	MSG_RELOADING,
	MSG_STOPPING,
	MSG_FDSTORE, /* FDSTORE=1 or FDSTOREREMOVE=1: kept in order, never coalesced */
};

/* A message that must not be lost, waiting for room on the socket. */
struct notify_msg {
	struct notify_msg *next;
	enum msg_kind kind;
	int fd; /* MSG_FDSTORE: our duplicate, closed once sent */
	char text[];
};

/* One per process, like $NOTIFY_SOCKET itself. */
static struct {
	struct ev_loop *loop; /* NULL until notify_init: sends are tried only inline then */
	int fd;		      /* connected to $NOTIFY_SOCKET, non-blocking; -1 until used */
	ev_io writable;
	ev_timer reconnect;
	ev_timer watchdog;
	bool watchdog_running;
	struct notify_msg *head, **tail;
	char *status_pending; /* latest STATUS= text not sent yet */
	char *status_sent;    /* last STATUS= text sent */
	bool watchdog_pending;
	bool long_path_logged; /* $NOTIFY_SOCKET does not fit a sockaddr_un: said once */
} notify = {.fd = -1, .tail = &notify.head};

static void notify_flush(void);

static bool notify_enabled(void)
{
	const char *socket = getenv("NOTIFY_SOCKET");

	return socket && socket[0];
}

/* Connects a non-blocking datagram socket to $NOTIFY_SOCKET ("/path" or "@abstract"). */
static int notify_connect(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	size_t len = path ? strlen(path) : 0;
	socklen_t addr_len;
	int fd;

	if (len == 0 || (path[0] != '/' && path[0] != '@'))
		return -EAFNOSUPPORT;
	if (len > sizeof(addr.sun_path)) {
		if (!notify.long_path_logged)
			log_err(
			    "NOTIFY_SOCKET is %zu bytes long, too long for a socket address (at "
			    "most %zu): the service manager will hear nothing from moletun "
			    "(READY=1, STATUS, WATCHDOG=1)",
			    len, sizeof(addr.sun_path));
		notify.long_path_logged = true;
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, path, len);
	if (path[0] == '@')
		addr.sun_path[0] = '\0';
	/* The length counts a path's NUL only where it fits: Linux takes a full sun_path. */
	addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
			       (path[0] == '/' && len < sizeof(addr.sun_path)));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* Connected: poll() then reports when the reader's queue has room again. */
	if (connect(fd, (struct sockaddr *)&addr, addr_len) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	notify.fd = fd;
	return 0;
}

static void notify_disconnect(void)
{
	if (notify.loop)
		ev_io_stop(notify.loop, &notify.writable);
	if (notify.fd >= 0)
		close(notify.fd);
	notify.fd = -1;
}

/* One datagram, optionally carrying a descriptor. 0 or -errno (-EAGAIN: queue full). */
static int notify_send(const char *text, int fd)
{
	union {
		struct cmsghdr header;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = (void *)text, .iov_len = strlen(text)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&control, 0, sizeof(control));
		mh.msg_control = &control;
		mh.msg_controllen = sizeof(control);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	if (sendmsg(notify.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return -errno;
	return 0;
}

static void msg_free(struct notify_msg *m)
{
	if (m && m->fd >= 0)
		close(m->fd);
	free(m);
}

static void queue_pop(void)
{
	struct notify_msg *m = notify.head;

	notify.head = m->next;
	if (!notify.head)
		notify.tail = &notify.head;
	msg_free(m);
}

static void queue_clear(void)
{
	while (notify.head)
		queue_pop();
}

/*
 * Sends what it can. An error other than a full queue means the manager's socket is gone
 * (ECONNREFUSED after it closed) or refuses this message: a refused message is dropped,
 * a gone socket is reconnected later with everything kept.
 */
static int flush_one(const char *text, int fd)
{
	int r = notify_send(text, fd);

	if (r == -EAGAIN || r == 0)
		return r;
	if (r == -ECONNREFUSED || r == -ENOTCONN || r == -ENOENT) {
		notify_disconnect();
		return r;
	}
	log_debug("sd_notify: dropping \"%.20s\": %s", text, strerror(-r));
	return 0;
}

static void notify_flush(void)
{
	char line[600];
	int r = 0;

	if (notify.fd < 0) {
		r = notify_connect();
		if (r < 0) {
			if (notify.loop && !ev_is_active(&notify.reconnect)) {
				ev_timer_set(&notify.reconnect, RECONNECT_SEC, 0.);
				ev_timer_start(notify.loop, &notify.reconnect);
			}
			return;
		}
	}
	while (r == 0 && notify.head) {
		r = flush_one(notify.head->text, notify.head->fd);
		if (r == 0)
			queue_pop();
	}
	if (r == 0 && notify.status_pending) {
		snprintf(line, sizeof(line), "STATUS=%s", notify.status_pending);
		r = flush_one(line, -1);
		if (r == 0) {
			free(notify.status_sent);
			notify.status_sent = notify.status_pending;
			notify.status_pending = NULL;
		}
	}
	if (r == 0 && notify.watchdog_pending) {
		r = flush_one("WATCHDOG=1", -1);
		if (r == 0)
			notify.watchdog_pending = false;
	}
	if (!notify.loop)
		return;
	if (r == -EAGAIN && !ev_is_active(&notify.writable)) {
		ev_io_set(&notify.writable, notify.fd, EV_WRITE);
		ev_io_start(notify.loop, &notify.writable);
	} else if (r != -EAGAIN) {
		ev_io_stop(notify.loop, &notify.writable);
	}
	if (notify.fd < 0 && !ev_is_active(&notify.reconnect)) {
		ev_timer_set(&notify.reconnect, RECONNECT_SEC, 0.);
		ev_timer_start(notify.loop, &notify.reconnect);
	}
}

static void writable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	notify_flush();
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	notify_flush();
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	notify.watchdog_pending = true;
	notify_flush();
}

/* Drops unsent messages a newer one of `kind` makes redundant; false: drop the new one. */
static bool queue_coalesce(enum msg_kind kind)
{
	struct notify_msg **last_reloading = NULL;

	if (notify.head && (kind == MSG_READY || kind == MSG_STOPPING)) {
		struct notify_msg *tail = notify.head;

		while (tail->next)
			tail = tail->next;
		return tail->kind != kind;
	}
	if (kind != MSG_RELOADING)
		return true;
	for (struct notify_msg **p = &notify.head; *p; p = &(*p)->next)
		if ((*p)->kind == MSG_RELOADING)
			last_reloading = p;
	if (!last_reloading)
		return true;
	/* RELOADING=1 then READY=1 not sent yet: the new reload stands for both. */
	while (*last_reloading) {
		struct notify_msg *m = *last_reloading;

		if (m->kind != MSG_READY && m->kind != MSG_RELOADING) {
			last_reloading = &m->next;
			continue;
		}
		*last_reloading = m->next;
		msg_free(m);
	}
	notify.tail = &notify.head;
	while (*notify.tail)
		notify.tail = &(*notify.tail)->next;
	return true;
}

static int queue_push(enum msg_kind kind, const char *text, int fd)
{
	size_t len = strlen(text);
	struct notify_msg *m;

	if (!queue_coalesce(kind))
		return 0;
	m = malloc(sizeof(*m) + len + 1);
	if (!m)
		return -ENOMEM;
	m->next = NULL;
	m->kind = kind;
	m->fd = fd;
	memcpy(m->text, text, len + 1);
	*notify.tail = m;
	notify.tail = &m->next;
	notify_flush();
	return 0;
}

void notify_init(struct ev_loop *loop)
{
	uint64_t usec = 0;
	double interval;

	if (!notify_enabled() || notify.loop)
		return;
	notify.loop = loop;
	ev_init(&notify.writable, writable_cb);
	ev_init(&notify.reconnect, reconnect_cb);
	/* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process. */
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		/* Half the interval, as sd_watchdog_enabled(3) recommends: one late tick is fine. */
		interval = (double)usec / 2e6;
		ev_timer_init(&notify.watchdog, watchdog_cb, interval, interval);
		ev_timer_start(loop, &notify.watchdog);
		notify.watchdog_running = true;
	}
	notify_flush();
}

void notify_finish(struct ev_loop *loop)
{
	if (notify.watchdog_running) {
		ev_timer_stop(loop, &notify.watchdog);
		notify.watchdog_running = false;
	}
	if (notify.loop) {
		ev_timer_stop(notify.loop, &notify.reconnect);
		ev_io_stop(notify.loop, &notify.writable);
	}
	notify_disconnect();
	notify.loop = NULL;
	queue_clear();
	free(notify.status_pending);
	free(notify.status_sent);
	notify.status_pending = notify.status_sent = NULL;
	notify.watchdog_pending = false;
	notify.long_path_logged = false;
}

void notify_ready(void)
{
	if (notify_enabled())
		queue_push(MSG_READY, "READY=1", -1);
}

void notify_status(const char *text)
{
	const char *current = notify.status_pending ? notify.status_pending : notify.status_sent;
	char *line;

	if (!notify_enabled())
		return;
	line = strdup(text);
	if (!line)
		return;
	/* A newline would end STATUS= and start another assignment. */
	for (char *p = line; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	if (current && strcmp(current, line) == 0) {
		free(line);
		return;
	}
	free(notify.status_pending);
	notify.status_pending = NULL;
	/* Back to what the manager already shows before the change went out: nothing to send. */
	if (notify.status_sent && strcmp(notify.status_sent, line) == 0) {
		free(line);
		return;
	}
	notify.status_pending = line;
	notify_flush();
}

void notify_reloading(void)
{
	char text[64];

	if (!notify_enabled())
		return;
	snprintf(text, sizeof(text), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, clock_now_usec());
	queue_push(MSG_RELOADING, text, -1);
}

void notify_stopping(void)
{
	if (notify_enabled())
		queue_push(MSG_STOPPING, "STOPPING=1", -1);
}

/* sd_pid_notify_with_fds(3): a name is at most 255 printable characters, no ':'. */
static bool fdname_valid(const char *name)
{
	if (!name || !name[0] || strlen(name) > 255)
		return false;
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == ':')
			return false;
	return true;
}

int notify_fdstore(int fd, const char *name)
{
	char text[300];
	int copy, r;

	if (!notify_enabled())
		return -ENOTCONN;
	if (!fdname_valid(name))
		return -EINVAL;
	copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (copy < 0)
		return -errno;
	snprintf(text, sizeof(text), "FDSTORE=1\nFDNAME=%s", name);
	r = queue_push(MSG_FDSTORE, text, copy);
	if (r < 0)
		close(copy);
	return r;
}

int notify_fdstore_remove(const char *name)
{
	char text[300];

	if (!notify_enabled())
		return -ENOTCONN;
	if (!fdname_valid(name))
		return -EINVAL;
	snprintf(text, sizeof(text), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	/* The same queue as FDSTORE=1: a remove never overtakes the store it undoes. */
	return queue_push(MSG_FDSTORE, text, -1);
}

unsigned notify_pending(void)
{
	unsigned n = (notify.status_pending != NULL) + notify.watchdog_pending;

	for (struct notify_msg *m = notify.head; m; m = m->next)
		n++;
	return n;
}
