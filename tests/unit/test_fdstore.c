#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdstore.h"
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
	/* Keep 3..15 for the passed descriptors: placeholders until pass_fds() puts them. */
	for (int fd = 3; fd < 16; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			assert_int_equal(open("/dev/null", O_RDONLY | O_CLOEXEC), fd);
	snprintf(f->dir, sizeof(f->dir), "/tmp/moletun-fdstore-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/notify", f->dir);
	f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(f->fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", f->path);
	assert_int_equal(bind(f->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	setenv("NOTIFY_SOCKET", f->path, 1);
	f->loop = ev_loop_new(EVFLAG_AUTO);
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
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	free(f);
	return 0;
}

/* The next notification (text only; a passed descriptor is closed), or NULL. */
static char *receive(struct fake_systemd *f, int timeout_ms)
{
	static char buf[1024];
	union {
		struct cmsghdr header;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = &control,
			    .msg_controllen = sizeof(control)};
	struct pollfd pfd = {.fd = f->fd, .events = POLLIN};
	struct cmsghdr *cm;
	ssize_t n;

	if (poll(&pfd, 1, timeout_ms) != 1)
		return NULL;
	n = recvmsg(f->fd, &mh, 0);
	assert_true(n >= 0);
	buf[n] = '\0';
	cm = CMSG_FIRSTHDR(&mh);
	if (cm && cm->cmsg_type == SCM_RIGHTS) {
		int fd;

		memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		close(fd);
	}
	return buf;
}

static void expect_message(struct fake_systemd *f, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void expect_message(struct fake_systemd *f, const char *fmt, ...)
{
	char want[256];
	char *got = receive(f, 1000);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(want, sizeof(want), fmt, ap);
	va_end(ap);
	assert_non_null(got);
	assert_string_equal(got, want);
}

static void expect_nothing(struct fake_systemd *f)
{
	char *got = receive(f, 20);

	if (got)
		fail_msg("unexpected notification '%s'", got);
}

/* A listening (or, with type SOCK_DGRAM, bound) socket on 127.0.0.1 and a free port. */
static int make_socket(int type, unsigned *ret_port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	if (type == SOCK_STREAM)
		assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*ret_port = ntohs(sin.sin_port);
	return fd;
}

/*
 * A UDP socket bound to a port that a TCP listener holds too (*ret_tcp): closing that
 * listener right before a test binds TCP on the port leaves no time for another process to
 * take it. A UDP port picked alone may well be taken for TCP already.
 */
static int make_udp_beside_tcp(unsigned *ret_port, int *ret_tcp)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	*ret_tcp = make_socket(SOCK_STREAM, ret_port);
	assert_true(fd >= 0);
	sin.sin_port = htons((uint16_t)*ret_port);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* A port nothing listens on now. */
static unsigned free_port(void)
{
	unsigned port;
	int fd = make_socket(SOCK_STREAM, &port);

	close(fd);
	return port;
}

static ino_t inode_of(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_ino;
}

/* Puts fds at 3, 4, ... as the service manager does and sets LISTEN_*. */
static void pass_fds(const int *fds, ino_t *inodes, int n, const char *names)
{
	int copies[8];
	char pid[32], count[16];

	for (int i = 0; i < n; i++) {
		copies[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
		assert_true(copies[i] >= 0);
		inodes[i] = inode_of(fds[i]);
		close(fds[i]);
	}
	for (int i = 0; i < n; i++) {
		assert_int_equal(dup2(copies[i], 3 + i), 3 + i);
		close(copies[i]);
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	snprintf(count, sizeof(count), "%d", n);
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", count, 1);
	setenv("LISTEN_FDNAMES", names, 1);
}

static void test_names(void **state)
{
	char name[300];

	assert_int_equal(fdstore_tcp_name("127.0.0.1", 5433, name, sizeof(name)), 0);
	assert_string_equal(name, "L-127.0.0.1-5433");
	/* canonical spelling, and no ':' (FDNAME forbids it) */
	assert_int_equal(fdstore_tcp_name("0:0::1", 5433, name, sizeof(name)), 0);
	assert_string_equal(name, "L-__1-5433");
	assert_int_equal(fdstore_tcp_name("0.0.0.0", 80, name, sizeof(name)), 0);
	assert_string_equal(name, "L-0.0.0.0-80");
	assert_true(fdstore_tcp_name("localhost", 80, name, sizeof(name)) < 0);
	assert_int_equal(fdstore_tcp_name("127.0.0.1", 5433, name, 8), -ENAMETOOLONG);
}

/*
 * Passed: a matching listener (kept), one no longer configured (pruned), a UDP socket and
 * a listener on the wrong port under configured names (both replaced).
 */
static void test_adopts_checks_and_prunes(void **state)
{
	struct fake_systemd *f = *state;
	unsigned p_keep, p_gone, p_udp, p_wrong, p_other;
	int fds[4], fd, flags, udp_tcp;
	ino_t inodes[4];
	char names[512];
	struct fdstore *s;

	fds[0] = make_socket(SOCK_STREAM, &p_keep);
	fds[1] = make_socket(SOCK_STREAM, &p_gone);
	fds[2] = make_udp_beside_tcp(&p_udp, &udp_tcp);
	fds[3] = make_socket(SOCK_STREAM, &p_other);
	p_wrong = free_port();
	snprintf(names, sizeof(names),
		 "L-127.0.0.1-%u:L-127.0.0.1-%u:L-127.0.0.1-%u:L-127.0.0.1-%u", p_keep, p_gone,
		 p_udp, p_wrong);
	pass_fds(fds, inodes, 4, names);

	assert_int_equal(fdstore_create(&s), 0);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));

	fd = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)p_keep);
	assert_int_equal(fd, 3);
	assert_true(inode_of(fd) == inodes[0]);
	flags = fcntl(fd, F_GETFL);
	assert_true(flags & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	expect_nothing(f); /* already in the store */

	close(udp_tcp);
	fd = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)p_udp);
	assert_true(fd >= 0);
	assert_true(inode_of(fd) != inodes[2]);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=L-127.0.0.1-%u", p_udp);
	expect_message(f, "FDSTORE=1\nFDNAME=L-127.0.0.1-%u", p_udp);

	fd = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)p_wrong);
	assert_true(fd >= 0);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=L-127.0.0.1-%u", p_wrong);
	expect_message(f, "FDSTORE=1\nFDNAME=L-127.0.0.1-%u", p_wrong);
	/* the socket that was passed under that name is closed: its port is free again */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	{
		struct sockaddr_in sin = {.sin_family = AF_INET,
					  .sin_port = htons((uint16_t)p_other),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

		assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), -1);
		assert_int_equal(errno, ECONNREFUSED);
	}
	close(fd);

	fdstore_prune(s);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=L-127.0.0.1-%u", p_gone);
	expect_nothing(f);
	assert_int_equal(fcntl(4, F_GETFD), -1); /* closed */
	fdstore_destroy(s);
}

/* A tunnel that restarts (reload) gets the same socket back; unused ones close at prune. */
static void test_release_keeps_socket_until_prune(void **state)
{
	struct fake_systemd *f = *state;
	unsigned port = free_port();
	struct fdstore *s;
	int fd, again;
	ino_t ino;

	assert_int_equal(fdstore_create(&s), 0);
	fd = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)port);
	assert_true(fd >= 0);
	ino = inode_of(fd);
	expect_message(f, "FDSTORE=1\nFDNAME=L-127.0.0.1-%u", port);
	fdstore_release(s, fd);
	again = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)port);
	assert_int_equal(again, fd);
	assert_true(inode_of(again) == ino);
	expect_nothing(f);
	fdstore_prune(s); /* in use: stays */
	expect_nothing(f);
	fdstore_release(s, again);
	fdstore_prune(s);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=L-127.0.0.1-%u", port);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	fdstore_destroy(s);
}

/* 127.0.0.1:P changed to 0.0.0.0:P: the old socket must go before the new one can bind. */
static void test_port_taken_by_unused_socket(void **state)
{
	struct fake_systemd *f = *state;
	unsigned port;
	int fds[1], fd;
	ino_t inodes[1];
	char names[64];
	struct fdstore *s;

	fds[0] = make_socket(SOCK_STREAM, &port);
	snprintf(names, sizeof(names), "L-127.0.0.1-%u", port);
	pass_fds(fds, inodes, 1, names);
	assert_int_equal(fdstore_create(&s), 0);
	fd = fdstore_listen_tcp(s, "0.0.0.0", (uint16_t)port);
	assert_true(fd >= 0);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=L-127.0.0.1-%u", port);
	expect_message(f, "FDSTORE=1\nFDNAME=L-0.0.0.0-%u", port);
	fdstore_prune(s);
	expect_nothing(f);
	fdstore_destroy(s);
}

/* Passed descriptors and names that match nothing: all closed, removed by name. */
static void test_control_taken_by_name(void **state)
{
	struct fake_systemd *f = *state;
	unsigned port;
	int fds[2];
	ino_t inodes[2];
	struct fdstore *s;
	int fd;

	fds[0] = make_socket(SOCK_STREAM, &port);
	fds[1] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	pass_fds(fds, inodes, 2, "unknown:control");
	assert_int_equal(fdstore_create(&s), 0);
	assert_int_equal(fdstore_take(s, "nothing"), -ENOENT);
	fd = fdstore_take(s, FDSTORE_CONTROL);
	assert_int_equal(fd, 4);
	assert_true(inode_of(fd) == inodes[1]);
	assert_int_equal(fdstore_take(s, FDSTORE_CONTROL), -ENOENT);
	close(fd);
	fdstore_prune(s);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=unknown");
	expect_nothing(f);
	fdstore_destroy(s);
}

/* What the service manager holds after our messages: FDSTORE=1 adds a descriptor unless
 * the same socket is stored already, FDSTOREREMOVE=1 removes every entry of the name. */
struct model_store {
	char names[8][64];
	ino_t inodes[8];
	int n;
};

static void model_apply(struct fake_systemd *f, struct model_store *m)
{
	char buf[1024];
	union {
		struct cmsghdr header;
		char space[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf) - 1};
	struct pollfd pfd = {.fd = f->fd, .events = POLLIN};

	while (poll(&pfd, 1, 50) == 1) {
		struct msghdr mh = {.msg_iov = &iov,
				    .msg_iovlen = 1,
				    .msg_control = &control,
				    .msg_controllen = sizeof(control)};
		struct cmsghdr *cm;
		ssize_t n = recvmsg(f->fd, &mh, 0);
		const char *name;
		int fd = -1;

		assert_true(n >= 0);
		buf[n] = '\0';
		cm = CMSG_FIRSTHDR(&mh);
		if (cm && cm->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		name = strstr(buf, "FDNAME=");
		assert_non_null(name);
		name += strlen("FDNAME=");
		if (strncmp(buf, "FDSTOREREMOVE=1\n", 16) == 0) {
			for (int i = m->n; i-- > 0;)
				if (strcmp(m->names[i], name) == 0) {
					m->n--;
					memmove(&m->names[i], &m->names[i + 1],
						(size_t)(m->n - i) * sizeof(m->names[0]));
					memmove(&m->inodes[i], &m->inodes[i + 1],
						(size_t)(m->n - i) * sizeof(m->inodes[0]));
				}
		} else {
			bool known = false;
			ino_t ino;

			assert_true(strncmp(buf, "FDSTORE=1\n", 10) == 0);
			assert_true(fd >= 0);
			ino = inode_of(fd);
			for (int i = 0; i < m->n; i++)
				known = known || m->inodes[i] == ino;
			if (!known) {
				assert_true(m->n < 8);
				snprintf(m->names[m->n], sizeof(m->names[0]), "%s", name);
				m->inodes[m->n++] = ino;
			}
		}
		if (fd >= 0)
			close(fd);
	}
}

static int model_count(const struct model_store *m, const char *name, ino_t ino)
{
	int count = 0;

	for (int i = 0; i < m->n; i++)
		count += strcmp(m->names[i], name) == 0 && m->inodes[i] == ino;
	return count;
}

static int unix_listener(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/*
 * Two entries under one name (two "control", two of a forward's): the one taken stays in
 * the manager's store and the spares go, although FDSTOREREMOVE=1 removes by name.
 */
static void test_duplicate_names(void **state)
{
	struct fake_systemd *f = *state;
	struct model_store m = {0};
	char paths[2][128], names[256], tcp_name[64];
	unsigned port, port2;
	ino_t inodes[4];
	int fds[4], fd, tcp;
	struct fdstore *s;

	for (int i = 0; i < 2; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/control%d.sock", f->dir, i);
		fds[i] = unix_listener(paths[i]);
	}
	fds[2] = make_socket(SOCK_STREAM, &port);
	fds[3] = make_socket(SOCK_DGRAM, &port2); /* a spare under the same name */
	snprintf(tcp_name, sizeof(tcp_name), "L-127.0.0.1-%u", port);
	snprintf(names, sizeof(names), "control:control:%s:%s", tcp_name, tcp_name);
	pass_fds(fds, inodes, 4, names);
	for (int i = 0; i < 4; i++) {
		snprintf(m.names[i], sizeof(m.names[0]), "%s", i < 2 ? "control" : tcp_name);
		m.inodes[i] = inodes[i];
	}
	m.n = 4;

	assert_int_equal(fdstore_create(&s), 0);
	fd = fdstore_take(s, FDSTORE_CONTROL);
	assert_true(fd >= 0);
	tcp = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)port);
	assert_int_equal(tcp, 5);
	fdstore_prune(s);
	assert_int_equal(fdstore_take(s, FDSTORE_CONTROL), -ENOENT);
	model_apply(f, &m);
	/* exactly the sockets in use are left in the store, once each */
	assert_int_equal(m.n, 2);
	assert_int_equal(model_count(&m, "control", inode_of(fd)), 1);
	assert_int_equal(model_count(&m, tcp_name, inodes[2]), 1);
	/* the spares are closed here (their numbers may have been reused since) */
	for (int i = 3; i <= 6; i++)
		if (i != fd && i != tcp && fcntl(i, F_GETFD) >= 0)
			assert_true(inode_of(i) != inodes[i - 3]);
	close(fd);
	fdstore_destroy(s);
	unlink(paths[0]);
	unlink(paths[1]);
}

/* Fewer names than descriptors: the unnamed ones are closed, the named ones still used. */
static void test_fewer_names_than_fds(void **state)
{
	unsigned p_named, p_unnamed;
	int fds[2], fd, probe;
	ino_t inodes[2];
	char names[64];
	struct fdstore *s;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	fds[0] = make_socket(SOCK_STREAM, &p_named);
	fds[1] = make_socket(SOCK_STREAM, &p_unnamed);
	snprintf(names, sizeof(names), "L-127.0.0.1-%u", p_named);
	pass_fds(fds, inodes, 2, names);
	assert_int_equal(fdstore_create(&s), 0);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_FDNAMES"));
	/* nothing listens on the unnamed one's port any more */
	assert_true(fcntl(4, F_GETFD) < 0 || inode_of(4) != inodes[1]);
	probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sin.sin_port = htons((uint16_t)p_unnamed);
	assert_int_equal(connect(probe, (struct sockaddr *)&sin, sizeof(sin)), -1);
	assert_int_equal(errno, ECONNREFUSED);
	close(probe);
	fd = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)p_named);
	assert_int_equal(fd, 3);
	assert_true(inode_of(fd) == inodes[0]);
	fdstore_destroy(s);
}

/* More names than descriptors: each descriptor keeps its own name, the rest is ignored. */
static void test_more_names_than_fds(void **state)
{
	struct fake_systemd *f = *state;
	unsigned port;
	int fds[1], fd;
	ino_t inodes[1];
	char names[96];
	struct fdstore *s;

	fds[0] = make_socket(SOCK_STREAM, &port);
	snprintf(names, sizeof(names), "L-127.0.0.1-%u:control", port);
	pass_fds(fds, inodes, 1, names);
	assert_int_equal(fdstore_create(&s), 0);
	assert_int_equal(fdstore_take(s, FDSTORE_CONTROL), -ENOENT);
	fd = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)port);
	assert_int_equal(fd, 3);
	assert_true(inode_of(fd) == inodes[0]);
	fdstore_prune(s);
	expect_nothing(f);
	fdstore_destroy(s);
}

/* A listener on [::] and a free port, with IPV6_V6ONLY as given. */
static int make_socket6(int v6only, unsigned *ret_port)
{
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT};
	socklen_t len = sizeof(sin6);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)), 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin6, &len), 0);
	*ret_port = ntohs(sin6.sin6_port);
	return fd;
}

/*
 * An inherited [::] listener that also takes IPv4 (IPV6_V6ONLY=0) is not what a [::]
 * forward binds: replaced by one that takes IPv6 only, so 127.0.0.1 is refused again.
 */
static void test_dual_stack_listener_replaced(void **state)
{
	struct fake_systemd *f = *state;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	unsigned port, port_v6only;
	int fds[2], fd, v6only = 0, probe;
	socklen_t len = sizeof(v6only);
	ino_t inodes[2];
	char names[64];
	struct fdstore *s;

	fds[0] = make_socket6(0, &port);
	fds[1] = make_socket6(1, &port_v6only);
	snprintf(names, sizeof(names), "L-__-%u:L-__-%u", port, port_v6only);
	pass_fds(fds, inodes, 2, names);
	assert_int_equal(fdstore_create(&s), 0);

	fd = fdstore_listen_tcp(s, "::", (uint16_t)port_v6only);
	assert_int_equal(fd, 4); /* as moletun binds it: kept */
	fd = fdstore_listen_tcp(s, "::", (uint16_t)port);
	assert_true(fd >= 0);
	assert_true(inode_of(fd) != inodes[0]);
	assert_int_equal(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
	assert_int_equal(v6only, 1);
	expect_message(f, "FDSTOREREMOVE=1\nFDNAME=L-__-%u", port);
	expect_message(f, "FDSTORE=1\nFDNAME=L-__-%u", port);
	probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sin.sin_port = htons((uint16_t)port);
	assert_int_equal(connect(probe, (struct sockaddr *)&sin, sizeof(sin)), -1);
	assert_int_equal(errno, ECONNREFUSED);
	close(probe);
	fdstore_destroy(s);
}

/* Outside systemd: nothing adopted, nothing sent, sockets still bound. */
static void test_outside_systemd(void **state)
{
	struct fake_systemd *f = *state;
	unsigned port = free_port();
	struct fdstore *s;
	int fd;

	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(fdstore_create(&s), 0);
	fd = fdstore_listen_tcp(s, "127.0.0.1", (uint16_t)port);
	assert_true(fd >= 0);
	fdstore_release(s, fd);
	fdstore_prune(s);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	fdstore_destroy(s);
	setenv("NOTIFY_SOCKET", f->path, 1);
	expect_nothing(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test_setup_teardown(test_adopts_checks_and_prunes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_release_keeps_socket_until_prune, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_port_taken_by_unused_socket, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_control_taken_by_name, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicate_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fewer_names_than_fds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_more_names_than_fds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dual_stack_listener_replaced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outside_systemd, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
