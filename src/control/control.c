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

		if (!control_client_read(c))
			continue;
		send(c->fd, "error busy\n", strlen("error busy\n"), MSG_NOSIGNAL | MSG_DONTWAIT);
		server_note_full(s, true, c->peer.uid);
		control_client_destroy(c);
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
		if (control_client_create(s, fd) < 0)
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
	if (control_client_create(s, fd) < 0)
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
		control_client_destroy(list_entry(s->reading.next, struct control_client, link));
	while (!list_empty(&s->answering))
		control_client_destroy(list_entry(s->answering.next, struct control_client, link));
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
