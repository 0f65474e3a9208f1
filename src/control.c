#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "control_proto.h"
#include "list.h"
#include "log.h"
#include "status_format.h"

#define ACCEPT_BATCH	  64  /* accepts per wakeup, so a flood cannot starve tunnels */
#define ACCEPT_RETRY_SEC  1.0 /* pause after EMFILE instead of spinning on the listener */
#define DRAIN_MAX	  (256 << 10)
#define FULL_LOG_SEC	  1.0 /* evictions and refusals: one log line at most this often */
#define NO_PEER_UID	  ((uid_t)-1)
#define PEER_GROUPS_FIRST 64

struct control_client {
	struct control_server *server;
	struct list link; /* in server->reading until the request is complete, then answering */
	int fd;
	ev_io io;
	ev_timer timeout;
	struct ucred peer; /* uid NO_PEER_UID when SO_PEERCRED failed */
	char in[CONTROL_REQUEST_MAX];
	size_t in_len;
	char *out; /* header LF body; NULL while reading the request */
	size_t out_len, out_sent;
	struct control_deferred *deferred; /* set while waiting for a deferred reply */
};

struct control_server {
	struct ev_loop *loop;
	struct control_ops ops;
	int fd;
	ev_io accept_io;
	ev_timer accept_retry;
	char *path;	/* set once bound: destroy removes the socket file */
	bool keep_path; /* the socket outlives the process (FD store): leave the file */
	dev_t dev;
	ino_t ino;
	gid_t control_gid;
	ev_tstamp timeout;
	struct list reading;   /* clients still sending their request, oldest first */
	struct list answering; /* clients being sent a reply or waiting for a deferred one */
	size_t n_clients;
	ev_timer full_log;
	size_t n_evicted, n_refused; /* since the last log line */
	uid_t evicted_uid;	     /* of the last client evicted */
};

/* A reply being built: the header text and the body stream. */
struct reply {
	char header[CONTROL_REQUEST_MAX];
	FILE *body;
	struct control_deferred *deferred; /* the handler's op will answer later */
};

enum deferred_state {
	DEFERRED_IN_HANDLER, /* the op has it; the client is not waiting on it yet */
	DEFERRED_DONE,	     /* finished within the handler: the reply is kept below */
	DEFERRED_WAITING,    /* the client waits for control_deferred_finish() */
	DEFERRED_ORPHAN,     /* the client has gone: finishing only frees */
};

struct control_deferred {
	enum deferred_state state;
	struct control_client *client; /* DEFERRED_WAITING only */
	char *header, *body;	       /* DEFERRED_DONE only */
	size_t body_len;
};

static void client_destroy(struct control_client *c)
{
	struct control_server *s;

	if (!c)
		return;
	s = c->server;
	if (c->deferred) {
		c->deferred->state = DEFERRED_ORPHAN;
		c->deferred->client = NULL;
	}
	ev_io_stop(s->loop, &c->io);
	ev_timer_stop(s->loop, &c->timeout);
	if (c->fd >= 0)
		close(c->fd);
	list_remove(&c->link);
	s->n_clients--;
	free(c->out);
	free(c);
}

/*
 * Discards what the client still sends (bounded), so that closing with unread input does
 * not turn into ECONNRESET on the client's side before it has read the reply.
 */
static void client_drain(struct control_client *c)
{
	char buf[4096];

	for (size_t total = 0; total < DRAIN_MAX;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n <= 0)
			break;
		total += (size_t)n;
	}
}

static void client_write(struct control_client *c)
{
	while (c->out_sent < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return; /* the io watcher waits for EV_WRITE, the timer bounds the wait */
		if (n < 0) {
			log_debug("control: client uid %d went away: %s", (int)c->peer.uid,
				  strerror(errno));
			client_destroy(c);
			return;
		}
		c->out_sent += (size_t)n;
	}
	client_drain(c);
	client_destroy(c);
}

/* Replaces control characters so the message stays one line of text. */
static void sanitize_line(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* Switches the client from reading its request to sending `header` LF `body`. */
static void client_reply(struct control_client *c, const char *header, const char *body,
			 size_t body_len)
{
	struct control_server *s = c->server;
	size_t header_len = strlen(header);

	c->out = malloc(header_len + 1 + body_len);
	if (!c->out) {
		client_destroy(c);
		return;
	}
	memcpy(c->out, header, header_len);
	c->out[header_len] = '\n';
	if (body_len)
		memcpy(c->out + header_len + 1, body, body_len);
	c->out_len = header_len + 1 + body_len;
	c->out_sent = 0;
	ev_io_stop(s->loop, &c->io);
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(s->loop, &c->io);
	ev_timer_stop(s->loop, &c->timeout);
	ev_timer_set(&c->timeout, s->timeout, 0.);
	ev_timer_start(s->loop, &c->timeout);
	client_write(c);
}

static void client_reply_error(struct control_client *c, const char *message)
{
	char header[CONTROL_REQUEST_MAX];

	snprintf(header, sizeof(header), "error %s", message);
	sanitize_line(header);
	client_reply(c, header, NULL, 0);
}

__attribute__((format(printf, 2, 3))) static void reply_error(struct reply *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(r->header, sizeof(r->header), "error ");
	va_start(ap, fmt);
	vsnprintf(r->header + n, sizeof(r->header) - (size_t)n, fmt, ap);
	va_end(ap);
}

static const char *request_name(const struct control_request *req)
{
	return req->name[0] ? req->name : NULL;
}

static int take_snapshot(struct control_server *s, const struct control_request *req,
			 struct reply *r, struct status *ret)
{
	int err;

	if (!s->ops.snapshot) {
		reply_error(r, "not supported");
		return -EOPNOTSUPP;
	}
	err = s->ops.snapshot(s->ops.userdata, request_name(req), ret);
	if (err == -ENOENT && req->name[0])
		reply_error(r, "no such tunnel: %s", req->name);
	else if (err < 0)
		reply_error(r, "cannot read tunnel state: %s", strerror(-err));
	return err;
}

static void handle_status(struct control_server *s, const struct control_request *req,
			  struct reply *r)
{
	struct status st = {0};

	if (take_snapshot(s, req, r, &st) < 0)
		return;
	snprintf(r->header, sizeof(r->header), "ok tunnels=%zu up=%zu healthy=%zu", st.n_tunnels,
		 status_count_up(&st), status_count_healthy(&st));
	if (req->json)
		status_format_json(&st, r->body);
	else
		status_format_table(&st, clock_wall().tv_sec, r->body);
	status_free(&st);
}

static void handle_metrics(struct control_server *s, const struct control_request *req,
			   struct reply *r)
{
	struct status st = {0};

	if (take_snapshot(s, req, r, &st) < 0)
		return;
	snprintf(r->header, sizeof(r->header), "ok");
	status_format_metrics(&st, r->body);
	status_free(&st);
}

static void handle_reconnect(struct control_server *s, const struct control_request *req,
			     struct reply *r)
{
	int err;

	if (!s->ops.reconnect) {
		reply_error(r, "not supported");
		return;
	}
	err = s->ops.reconnect(s->ops.userdata, req->all ? NULL : req->name);
	if (err == -ENOENT && !req->all)
		reply_error(r, "no such tunnel: %s", req->name);
	else if (err < 0)
		reply_error(r, "reconnect failed: %s", strerror(-err));
	else
		snprintf(r->header, sizeof(r->header), "ok");
}

static void handle_reload(struct control_server *s, const struct control_request *req,
			  struct reply *r)
{
	struct diag errors;
	int err;

	if (!s->ops.reload) {
		reply_error(r, "not supported");
		return;
	}
	diag_init(&errors);
	err = s->ops.reload(s->ops.userdata, &errors);
	if (err == -EINVAL)
		reply_error(r, "invalid configuration");
	else if (err < 0)
		reply_error(r, "reload failed: %s", strerror(-err));
	else
		snprintf(r->header, sizeof(r->header), "ok");
	for (size_t i = 0; i < errors.count; i++)
		fprintf(r->body, "%s\n", errors.messages[i]);
	diag_finish(&errors);
}

static void handle_alert_test(struct control_server *s, const struct control_request *req,
			      struct reply *r)
{
	struct control_deferred *d;
	int err;

	if (!s->ops.alert_test) {
		reply_error(r, "not supported");
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		reply_error(r, "out of memory");
		return;
	}
	d->state = DEFERRED_IN_HANDLER;
	err = s->ops.alert_test(s->ops.userdata, request_name(req), d);
	if (err < 0) {
		free(d);
		if (err == -ENOENT && req->name[0])
			reply_error(r, "no such alert: %s", req->name);
		else if (err == -ENOENT)
			reply_error(r, "no alerts configured");
		else
			reply_error(r, "alert test failed: %s", strerror(-err));
		return;
	}
	r->deferred = d;
}

static void (*const handlers[])(struct control_server *s, const struct control_request *req,
				struct reply *r) = {
    [CONTROL_STATUS] = handle_status,
    [CONTROL_METRICS] = handle_metrics,
    [CONTROL_RECONNECT] = handle_reconnect,
    [CONTROL_RELOAD] = handle_reload,
    [CONTROL_ALERT_TEST] = handle_alert_test,
};

static void deferred_free(struct control_deferred *d)
{
	free(d->header);
	free(d->body);
	free(d);
}

/* Sends a finished reply, or parks the client until control_deferred_finish(). */
static void client_defer(struct control_client *c, struct control_deferred *d)
{
	struct control_server *s = c->server;

	if (d->state == DEFERRED_DONE) {
		if (d->header)
			client_reply(c, d->header, d->body, d->body_len);
		else
			client_reply_error(c, "out of memory");
		deferred_free(d);
		return;
	}
	d->state = DEFERRED_WAITING;
	d->client = c;
	c->deferred = d;
	ev_io_stop(s->loop, &c->io);
	ev_timer_stop(s->loop, &c->timeout);
	ev_timer_set(&c->timeout, CONTROL_DEFERRED_TIMEOUT_SEC, 0.);
	ev_timer_start(s->loop, &c->timeout);
}

void control_deferred_finish(struct control_deferred *d, const char *header, const char *body,
			     size_t body_len)
{
	char line[CONTROL_REQUEST_MAX];
	struct control_client *c;

	snprintf(line, sizeof(line), "%s", header);
	sanitize_line(line);
	if (body_len > CONTROL_REPLY_MAX) {
		snprintf(line, sizeof(line), "error reply too large");
		body_len = 0;
	}
	switch (d->state) {
	case DEFERRED_IN_HANDLER:
		d->state = DEFERRED_DONE;
		d->header = strdup(line);
		d->body = malloc(body_len ? body_len : 1);
		if (!d->header || !d->body) {
			free(d->header);
			d->header = NULL; /* client_defer() answers "error out of memory" */
			return;
		}
		if (body_len)
			memcpy(d->body, body, body_len);
		d->body_len = body_len;
		return;
	case DEFERRED_WAITING:
		c = d->client;
		c->deferred = NULL;
		deferred_free(d);
		client_reply(c, line, body, body_len);
		return;
	case DEFERRED_DONE:
	case DEFERRED_ORPHAN:
		deferred_free(d);
		return;
	}
}

/* Supplementary groups of the peer process (SO_PEERGROUPS, Linux >= 4.13). */
static int peer_groups(int fd, gid_t **ret, size_t *ret_n)
{
#ifdef SO_PEERGROUPS
	socklen_t len = PEER_GROUPS_FIRST * sizeof(gid_t);

	for (int attempt = 0; attempt < 2; attempt++) {
		gid_t *groups = malloc(len ? len : sizeof(gid_t));

		if (!groups)
			return -ENOMEM;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
			*ret = groups;
			*ret_n = len / sizeof(gid_t);
			return 0;
		}
		free(groups);
		if (errno != ERANGE)
			return -errno;
	}
	return -ERANGE;
#else
	return -ENOPROTOOPT;
#endif
}

/* Groups of the peer's user from the group database (for kernels without SO_PEERGROUPS). */
static int user_groups(uid_t uid, gid_t gid, gid_t **ret, size_t *ret_n)
{
	struct passwd pw, *found = NULL;
	char buf[4096];
	int n = PEER_GROUPS_FIRST;

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) != 0 || !found)
		return -ENOENT;
	for (int attempt = 0; attempt < 2; attempt++) {
		gid_t *groups = calloc((size_t)n, sizeof(gid_t));
		int want = n;

		if (!groups)
			return -ENOMEM;
		if (getgrouplist(pw.pw_name, gid, groups, &want) >= 0) {
			*ret = groups;
			*ret_n = (size_t)want;
			return 0;
		}
		free(groups);
		n = want;
	}
	return -ERANGE;
}

/* Root, the daemon's own user, and members of the control group may change state. */
static bool client_may_mutate(const struct control_client *c)
{
	const struct control_server *s = c->server;
	gid_t *groups = NULL;
	size_t n = 0;
	bool member = false;
	int err;

	if (c->peer.uid == NO_PEER_UID)
		return false;
	if (c->peer.uid == 0 || c->peer.uid == geteuid() || c->peer.gid == s->control_gid)
		return true;
	err = peer_groups(c->fd, &groups, &n);
	if (err == -ENOPROTOOPT)
		err = user_groups(c->peer.uid, c->peer.gid, &groups, &n);
	for (size_t i = 0; err == 0 && i < n; i++)
		if (groups[i] == s->control_gid)
			member = true;
	free(groups);
	return member;
}

static void client_handle(struct control_client *c, const char *line, size_t len)
{
	struct control_server *s = c->server;
	struct control_request req;
	struct reply r = {.header = "error internal error"};
	const char *parse_error;
	char *body = NULL;
	size_t body_len = 0;

	if (control_request_parse(line, len, &req, &parse_error) < 0) {
		client_reply_error(c, parse_error);
		return;
	}
	if (control_command_mutates(req.command)) {
		if (!client_may_mutate(c)) {
			log_notice(
			    "control: %s refused: uid %d is not root nor in the control group",
			    control_command_str(req.command), (int)c->peer.uid);
			client_reply_error(c, "permission denied");
			return;
		}
		log_info("control: %s%s%s requested by uid %d", control_command_str(req.command),
			 req.all || req.name[0] ? " " : "", req.all ? "--all" : req.name,
			 (int)c->peer.uid);
	}
	r.body = open_memstream(&body, &body_len);
	if (!r.body) {
		client_reply_error(c, "out of memory");
		return;
	}
	handlers[req.command](s, &req, &r);
	if (r.deferred) {
		fclose(r.body);
		free(body);
		client_defer(c, r.deferred);
		return;
	}
	if (fclose(r.body) != 0) {
		free(body);
		client_reply_error(c, "out of memory");
		return;
	}
	sanitize_line(r.header);
	if (body_len > CONTROL_REPLY_MAX)
		client_reply_error(c, "reply too large");
	else
		client_reply(c, r.header, body, body_len);
	free(body);
}

/* The request is complete (or refused): from now on the client is never evicted. */
static void client_set_answering(struct control_client *c)
{
	list_remove(&c->link);
	list_insert_tail(&c->server->answering, &c->link);
}

/*
 * Reads what the client sent, at most one buffer's worth per call so that a client
 * streaming bytes cannot hold the loop. Returns true while the client is still sending
 * its request; false once it is being answered or has gone (then `c` may be freed).
 */
static bool client_read(struct control_client *c)
{
	ssize_t n, line_len;

	n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return true;
		client_destroy(c);
		return false;
	}
	if (n == 0) {
		/* EOF ends the request too (printf status | socat - UNIX:...); none: just go. */
		if (c->in_len == 0) {
			client_destroy(c);
		} else {
			client_set_answering(c);
			client_handle(c, c->in, c->in_len);
		}
		return false;
	}
	c->in_len += (size_t)n;
	line_len = control_request_scan(c->in, c->in_len);
	if (line_len == -EAGAIN)
		return true;
	client_set_answering(c);
	if (line_len == -EMSGSIZE)
		client_reply_error(c, "request too long");
	else
		client_handle(c, c->in, (size_t)line_len);
	return false;
}

static void client_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct control_client *c = w->data;

	if (c->out)
		client_write(c);
	else
		(void)client_read(c);
}

static void client_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct control_client *c = w->data;

	log_debug("control: dropping client uid %d after %.1f s", (int)c->peer.uid,
		  c->server->timeout);
	if (!c->out)
		send(c->fd, "error timeout\n", strlen("error timeout\n"),
		     MSG_NOSIGNAL | MSG_DONTWAIT);
	client_destroy(c);
}

static int client_create(struct control_server *s, int fd)
{
	struct control_client *c = calloc(1, sizeof(*c));
	socklen_t len = sizeof(c->peer);

	if (!c)
		return -ENOMEM;
	c->server = s;
	c->fd = fd;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->peer, &len) < 0)
		c->peer.uid = NO_PEER_UID;
	list_insert_tail(&s->reading, &c->link);
	s->n_clients++;
	ev_io_init(&c->io, client_io_cb, fd, EV_READ);
	c->io.data = c;
	ev_io_start(s->loop, &c->io);
	ev_timer_init(&c->timeout, client_timeout_cb, s->timeout, 0.);
	c->timeout.data = c;
	ev_timer_start(s->loop, &c->timeout);
	return 0;
}

static void server_log_full(struct control_server *s)
{
	char last[48] = "";

	if (s->n_evicted > 0)
		snprintf(last, sizeof(last), " (the last from uid %d)", (int)s->evicted_uid);
	log_notice("control: all %d client slots taken: %zu idle client%s closed to make room%s, "
		   "%zu turned away as busy",
		   CONTROL_CLIENTS_MAX, s->n_evicted, s->n_evicted == 1 ? "" : "s", last,
		   s->n_refused);
	s->n_evicted = 0;
	s->n_refused = 0;
}

/*
 * Counts an eviction (of a client of uid `evicted_uid`) or, when `evicted` is false, a
 * refusal. A flood of connections must not flood the log: the first is told, the rest
 * summed up once a second.
 */
static void server_note_full(struct control_server *s, bool evicted, uid_t evicted_uid)
{
	if (evicted) {
		s->n_evicted++;
		s->evicted_uid = evicted_uid;
	} else {
		s->n_refused++;
	}
	if (ev_is_active(&s->full_log))
		return;
	server_log_full(s);
	ev_timer_again(s->loop, &s->full_log);
}

static void full_log_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct control_server *s = w->data;

	if (s->n_evicted == 0 && s->n_refused == 0)
		ev_timer_stop(loop, w);
	else
		server_log_full(s);
}

/*
 * Frees a slot when all are taken, as sshd's MaxStartups drops unauthenticated
 * connections: the client that has gone longest without sending a complete request is
 * closed. A candidate's socket is read first, so a request already sent (moletun ctl
 * writes it right after connecting) is answered rather than thrown away. Clients being
 * answered are never closed. Returns false when every slot is busy answering.
 */
static bool server_make_room(struct control_server *s)
{
	while (s->n_clients >= CONTROL_CLIENTS_MAX && !list_empty(&s->reading)) {
		struct control_client *c = list_entry(s->reading.next, struct control_client, link);

		if (!client_read(c))
			continue;
		send(c->fd, "error busy\n", strlen("error busy\n"), MSG_NOSIGNAL | MSG_DONTWAIT);
		server_note_full(s, true, c->peer.uid);
		client_destroy(c);
	}
	return s->n_clients < CONTROL_CLIENTS_MAX;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct control_server *s = w->data;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (fd < 0 &&
		    (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
			log_warn("control: accept: %s; pausing the control socket for %.0f s",
				 strerror(errno), ACCEPT_RETRY_SEC);
			ev_io_stop(loop, &s->accept_io);
			ev_timer_set(&s->accept_retry, ACCEPT_RETRY_SEC, 0.);
			ev_timer_start(loop, &s->accept_retry);
			return;
		}
		if (fd < 0)
			return;
		if (!server_make_room(s)) {
			send(fd, "error busy\n", strlen("error busy\n"),
			     MSG_NOSIGNAL | MSG_DONTWAIT);
			close(fd);
			server_note_full(s, false, NO_PEER_UID);
			continue;
		}
		if (client_create(s, fd) < 0)
			close(fd);
	}
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct control_server *s = w->data;

	ev_io_start(loop, &s->accept_io);
}

/*
 * A socket file nobody answers on is left over from a daemon that died: remove it. Refuse
 * to remove anything else, and to steal the socket of a daemon that is still running.
 */
static int remove_stale_socket(const struct sockaddr_un *addr)
{
	struct stat st;
	int fd, err;

	if (lstat(addr->sun_path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* Non-blocking: a live listener answers 0 or EAGAIN (backlog full) at once. */
	err = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 ? errno : 0;
	close(fd);
	if (err == 0 || err == EAGAIN)
		return -EADDRINUSE;
	if (err != ECONNREFUSED)
		return -err;
	if (unlink(addr->sun_path) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int resolve_group(const char *group, gid_t *ret)
{
	struct group gr, *found = NULL;
	char buf[16384];
	int err;

	if (!group) {
		*ret = getegid();
		return 0;
	}
	err = getgrnam_r(group, &gr, buf, sizeof(buf), &found);
	if (err != 0 || !found) {
		log_err("control_group '%s': %s", group, err ? strerror(err) : "no such group");
		return -EINVAL;
	}
	*ret = gr.gr_gid;
	return 0;
}

/* Records the socket file as ours and gives it the control socket's group and mode. */
static int server_own_path(struct control_server *s, const char *path, const char *group)
{
	struct stat st;

	s->path = strdup(path);
	if (!s->path)
		return -ENOMEM;
	if (lstat(s->path, &st) < 0)
		return -errno;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	if (group && chown(s->path, (uid_t)-1, s->control_gid) < 0)
		return -errno;
	if (chmod(s->path, 0660) < 0)
		return -errno;
	return 0;
}

static int server_listen(struct control_server *s, const struct sockaddr_un *addr,
			 const char *group)
{
	mode_t old_umask;
	int err;

	err = remove_stale_socket(addr);
	if (err < 0)
		return err;
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		return -errno;
	/* Born 0600 so nobody else can connect before the mode and group are right. */
	old_umask = umask(0177);
	err = bind(s->fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 ? -errno : 0;
	umask(old_umask);
	if (err < 0)
		return err;
	err = server_own_path(s, addr->sun_path, group);
	if (err == -ENOMEM)
		unlink(addr->sun_path);
	if (err < 0)
		return err;
	if (listen(s->fd, SOMAXCONN) < 0)
		return -errno;
	return 0;
}

/* A client found queued on an inherited socket: served like one accepted later. */
static void server_take_queued(struct control_server *s, int fd)
{
	if (s->n_clients >= CONTROL_CLIENTS_MAX) {
		send(fd, "error busy\n", strlen("error busy\n"), MSG_NOSIGNAL | MSG_DONTWAIT);
		close(fd);
		server_note_full(s, false, NO_PEER_UID);
		return;
	}
	if (client_create(s, fd) < 0)
		close(fd);
}

/*
 * Accepts what is queued on fd (non-blocking) until the connection from `probe_addr`
 * comes out: true when it did. The clients accepted before it become s's.
 */
static bool accept_until(struct control_server *s, int fd, const struct sockaddr_un *probe_addr,
			 socklen_t probe_len)
{
	for (;;) {
		struct sockaddr_un peer;
		socklen_t len = sizeof(peer);
		int c = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (c < 0)
			return false;
		if (probe_addr && len == probe_len && memcmp(&peer, probe_addr, len) == 0) {
			close(c);
			return true;
		}
		server_take_queued(s, c);
	}
}

/*
 * Whether a connect to `addr` reaches the listening socket fd (non-blocking). Neither the
 * socket file's inode nor fd's readiness says which socket the path leads to (fd may have
 * clients queued from before the path was taken over), so a probe connects from an
 * address of its own (autobind, abstract) and fd's queue is accepted until the probe comes
 * out of it. The clients queued before it reached fd through the path: they become s's.
 */
static int path_leads_to(struct control_server *s, int fd, const struct sockaddr_un *addr)
{
	struct sockaddr_un mine = {.sun_family = AF_UNIX};
	socklen_t mine_len = sizeof(mine);
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r;

	if (probe < 0)
		return -errno;
	if (bind(probe, (struct sockaddr *)&mine, sizeof(sa_family_t)) < 0 ||
	    getsockname(probe, (struct sockaddr *)&mine, &mine_len) < 0) {
		r = -errno;
		goto out;
	}
	r = connect(probe, (const struct sockaddr *)addr, sizeof(*addr)) < 0 ? -errno : 0;
	if (r == -EAGAIN) {
		/* A full backlog: if it is fd's, taking its clients makes room for the probe. */
		accept_until(s, fd, NULL, 0);
		r = connect(probe, (const struct sockaddr *)addr, sizeof(*addr)) < 0 ? -errno : 0;
	}
	if (r == 0 && !accept_until(s, fd, &mine, mine_len))
		r = -EADDRINUSE;
	else if (r == -EAGAIN)
		r = -EADDRINUSE;
out:
	close(probe);
	return r;
}

/* An inherited socket is served only when it listens on `addr` and the path leads to it. */
static int server_adopt(struct control_server *s, int fd, const struct sockaddr_un *addr,
			const char *group)
{
	struct sockaddr_un bound;
	socklen_t len = sizeof(bound);
	int type = 0, listening = 0;
	socklen_t n = sizeof(int);
	struct stat st;
	int err, flags;

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) < 0)
		return -errno;
	n = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &n) < 0)
		return -errno;
	memset(&bound, 0, sizeof(bound));
	if (getsockname(fd, (struct sockaddr *)&bound, &len) < 0)
		return -errno;
	if (type != SOCK_STREAM || !listening || bound.sun_family != AF_UNIX)
		return -EINVAL;
	if (len <= offsetof(struct sockaddr_un, sun_path) ||
	    strncmp(bound.sun_path, addr->sun_path, sizeof(bound.sun_path)) != 0)
		return -EADDRNOTAVAIL;
	if (lstat(addr->sun_path, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	err = path_leads_to(s, fd, addr);
	if (err < 0)
		return err;
	err = server_own_path(s, addr->sun_path, group);
	if (err < 0)
		return err;
	s->fd = fd;
	/* It stays in the FD store, so the file must stay too. */
	s->keep_path = true;
	return 0;
}

/* Listens on `path`, or serves `adopted` (>= 0) when it checks out. */
static int server_create(struct ev_loop *loop, int adopted, const char *path, const char *group,
			 const struct control_ops *ops, struct control_server **ret)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct control_server *s;
	gid_t gid;
	int err;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	err = resolve_group(group, &gid);
	if (err < 0)
		return err;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->ops = *ops;
	s->fd = -1;
	s->control_gid = gid;
	s->timeout = CONTROL_TIMEOUT_SEC;
	list_init(&s->reading);
	list_init(&s->answering);
	ev_timer_init(&s->full_log, full_log_cb, 0., FULL_LOG_SEC);
	s->full_log.data = s;
	ev_io_init(&s->accept_io, accept_cb, -1, EV_READ);
	s->accept_io.data = s;
	ev_timer_init(&s->accept_retry, accept_retry_cb, ACCEPT_RETRY_SEC, 0.);
	s->accept_retry.data = s;
	if (adopted >= 0)
		err = server_adopt(s, adopted, &addr, group);
	else
		err = server_listen(s, &addr, group);
	if (err < 0) {
		/* the adopted socket stays the caller's, and so does its file */
		if (adopted >= 0) {
			s->fd = -1;
			free(s->path);
			s->path = NULL;
		}
		control_server_destroy(s);
		return err;
	}
	ev_io_set(&s->accept_io, s->fd, EV_READ);
	ev_io_start(loop, &s->accept_io);
	*ret = s;
	return 0;
}

int control_server_create(struct ev_loop *loop, const char *path, const char *group,
			  const struct control_ops *ops, struct control_server **ret)
{
	return server_create(loop, -1, path, group, ops, ret);
}

int control_server_adopt(struct ev_loop *loop, int fd, const char *path, const char *group,
			 const struct control_ops *ops, struct control_server **ret)
{
	if (fd < 0)
		return -EBADF;
	return server_create(loop, fd, path, group, ops, ret);
}

int control_server_fd(const struct control_server *s)
{
	return s->fd;
}

void control_server_keep_path(struct control_server *s)
{
	s->keep_path = true;
}

void control_server_destroy(struct control_server *s)
{
	struct stat st;

	if (!s)
		return;
	while (!list_empty(&s->reading))
		client_destroy(list_entry(s->reading.next, struct control_client, link));
	while (!list_empty(&s->answering))
		client_destroy(list_entry(s->answering.next, struct control_client, link));
	ev_io_stop(s->loop, &s->accept_io);
	ev_timer_stop(s->loop, &s->accept_retry);
	ev_timer_stop(s->loop, &s->full_log);
	if (s->fd >= 0)
		close(s->fd);
	/* Only our own socket: a newer daemon may have replaced it already. */
	if (s->path && !s->keep_path && lstat(s->path, &st) == 0 && st.st_dev == s->dev &&
	    st.st_ino == s->ino)
		unlink(s->path);
	free(s->path);
	free(s);
}

void control_server_set_timeout(struct control_server *s, double seconds)
{
	s->timeout = seconds;
}

size_t control_server_clients(const struct control_server *s)
{
	return s->n_clients;
}
