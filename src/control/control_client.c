#include "control_internal.h"

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

void control_client_destroy(struct control_client *c)
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
			control_client_destroy(c);
			return;
		}
		c->out_sent += (size_t)n;
	}
	client_drain(c);
	control_client_destroy(c);
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
		control_client_destroy(c);
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
bool control_client_read(struct control_client *c)
{
	ssize_t n, line_len;

	n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return true;
		control_client_destroy(c);
		return false;
	}
	if (n == 0) {
		/* EOF ends the request too (printf status | socat - UNIX:...); none: just go. */
		if (c->in_len == 0) {
			control_client_destroy(c);
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
		(void)control_client_read(c);
}

static void client_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct control_client *c = w->data;

	log_debug("control: dropping client uid %d after %.1f s", (int)c->peer.uid,
		  c->server->timeout);
	if (!c->out)
		send(c->fd, "error timeout\n", strlen("error timeout\n"),
		     MSG_NOSIGNAL | MSG_DONTWAIT);
	control_client_destroy(c);
}

int control_client_create(struct control_server *s, int fd)
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
