/* tcpbench: the data-plane half of moletun's benchmark (tests/bench/bench.py compiles it
 * with `cc -O2 -pthread` into its temp dir). Python alone cannot push a tunnel to its limit
 * on a 2-core machine; this does the byte moving and the timing.
 *
 *   tcpbench serve HOST PORT
 *       Target server (one thread, epoll). Each connection starts with a command byte:
 *         'U' + 8-byte big-endian N   reads N bytes, replies "K", waits for the next command
 *         'D' + 8-byte big-endian N   sends N bytes, waits for the next command
 *         'E'                         echoes everything that follows
 *       Prints "ready" once it listens; runs until killed.
 *   tcpbench up|down PORT BYTES CONNS TIMEOUT_S
 *       CONNS parallel connections, each moving BYTES/CONNS bytes (upload: client -> target,
 *       download: target -> client); the clock starts once all are connected and stops when
 *       the last has finished (the upload's "K" proves the target got every byte).
 *       Prints "OK MB_PER_S SECONDS" (MB = 10^6 bytes) or "ERR reason".
 *   tcpbench pingpong PORT COUNT SIZE WARMUP
 *       One connection, COUNT round trips of SIZE bytes after WARMUP unmeasured ones.
 *       Prints "OK P50_US P99_US MEAN_US MIN_US MAX_US".
 *   tcpbench connect PORT COUNT SIZE
 *       COUNT times: connect, send 'E' + SIZE bytes, read SIZE bytes, close.
 *       Prints "OK P50_US P99_US MEAN_US MAX_US ERRORS".
 * Client sockets use TCP_NODELAY (as ssh does on forwarded sockets) and 1 MiB user buffers;
 * kernel buffers are left to autotuning (several MB on loopback).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)

static char *g_buf;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fill_buf(void)
{
	g_buf = malloc(BUF);
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < BUF; i++) { /* not compressible, not all zeros */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		g_buf[i] = (char)x;
	}
}

static void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = v & 0xff;
		v >>= 8;
	}
}

static uint64_t get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/* ---------------------------------------------------------------- server */

enum { ST_CMD, ST_HDR, ST_UP, ST_DOWN, ST_ECHO };

struct conn {
	int fd;
	int state;
	char cmd;
	unsigned char hdr[8];
	int hdr_len;
	uint64_t left;
	char *echo; /* pending echo bytes */
	size_t echo_off, echo_len;
	int want_out;
};

static void set_events(int ep, struct conn *c, int out)
{
	if (c->want_out == out)
		return;
	/* Waiting for the way back: stop reading, so a level-triggered EPOLLIN cannot spin. */
	struct epoll_event ev = {.events = out ? EPOLLOUT : EPOLLIN, .data.ptr = c};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = out;
}

static void conn_close(int ep, struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->echo);
	free(c);
}

/* Returns -1 when the connection is to be closed. */
static int conn_write(int ep, struct conn *c)
{
	if (c->state == ST_DOWN) {
		while (c->left > 0) {
			size_t n = c->left < BUF ? c->left : BUF;
			ssize_t w = send(c->fd, g_buf, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EAGAIN || errno == EINTR)
					return 0;
				return -1;
			}
			c->left -= (uint64_t)w;
		}
		c->state = ST_CMD;
		set_events(ep, c, 0);
		return 0;
	}
	if (c->state == ST_ECHO) {
		while (c->echo_len > c->echo_off) {
			ssize_t w = send(c->fd, c->echo + c->echo_off, c->echo_len - c->echo_off,
					 MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EAGAIN || errno == EINTR)
					return 0;
				return -1;
			}
			c->echo_off += (size_t)w;
		}
		c->echo_off = c->echo_len = 0;
		set_events(ep, c, 0);
	}
	return 0;
}

static int conn_read(int ep, struct conn *c)
{
	for (;;) {
		if (c->state == ST_DOWN || (c->state == ST_ECHO && c->echo_len > c->echo_off))
			return 0; /* wait until the way back is free */
		if (c->state == ST_ECHO) {
			if (!c->echo && !(c->echo = malloc(65536)))
				return -1;
			ssize_t r = recv(c->fd, c->echo, 65536, 0);
			if (r == 0)
				return -1;
			if (r < 0)
				return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
			c->echo_off = 0;
			c->echo_len = (size_t)r;
			if (conn_write(ep, c) < 0)
				return -1;
			if (c->echo_len > c->echo_off) {
				set_events(ep, c, 1);
				return 0;
			}
			continue;
		}
		if (c->state == ST_UP) {
			size_t n = c->left < BUF ? c->left : BUF;
			ssize_t r = recv(c->fd, g_buf, n, 0);
			if (r == 0)
				return -1;
			if (r < 0)
				return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
			c->left -= (uint64_t)r;
			if (c->left == 0) {
				if (send(c->fd, "K", 1, MSG_NOSIGNAL) != 1)
					return -1;
				c->state = ST_CMD;
			}
			continue;
		}
		if (c->state == ST_CMD) {
			char b;
			ssize_t r = recv(c->fd, &b, 1, 0);
			if (r == 0)
				return -1;
			if (r < 0)
				return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
			c->cmd = b;
			if (b == 'E') {
				c->state = ST_ECHO;
			} else if (b == 'U' || b == 'D') {
				c->state = ST_HDR;
				c->hdr_len = 0;
			} else {
				return -1;
			}
			continue;
		}
		if (c->state == ST_HDR) {
			ssize_t r = recv(c->fd, c->hdr + c->hdr_len, 8 - c->hdr_len, 0);
			if (r == 0)
				return -1;
			if (r < 0)
				return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
			c->hdr_len += (int)r;
			if (c->hdr_len < 8)
				continue;
			c->left = get_be64(c->hdr);
			if (c->cmd == 'U') {
				c->state = c->left ? ST_UP : ST_CMD;
				if (!c->left && send(c->fd, "K", 1, MSG_NOSIGNAL) != 1)
					return -1;
			} else {
				c->state = ST_DOWN;
				if (conn_write(ep, c) < 0)
					return -1;
				if (c->state == ST_DOWN)
					set_events(ep, c, 1);
			}
			continue;
		}
	}
}

static int serve(const char *host, int port)
{
	int one = 1;
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, host, &sa.sin_addr);
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 4096) < 0) {
		perror("bind/listen");
		return 1;
	}
	int ep = epoll_create1(0);
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
	printf("ready\n");
	fflush(stdout);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0 && errno != EINTR)
			return 1;
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				for (;;) {
					int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
					if (fd < 0)
						break;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					struct conn *nc = calloc(1, sizeof(*nc));
					nc->fd = fd;
					nc->state = ST_CMD;
					struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			int bad = 0;
			if (c->want_out)
				bad = conn_write(ep, c) < 0;
			if (!bad && !c->want_out)
				bad = conn_read(ep, c) < 0;
			if (bad)
				conn_close(ep, c);
		}
	}
}

/* ---------------------------------------------------------------- clients */

static int dial(int port, double timeout_s)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct timeval tv = {.tv_sec = (time_t)timeout_s,
			     .tv_usec = (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* 0 ok, -1 error, -2 EOF */
static int recv_all(int fd, void *p, size_t n)
{
	char *c = p;
	while (n > 0) {
		ssize_t r = recv(fd, c, n, 0);
		if (r == 0)
			return -2;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

struct xfer {
	int fd;
	int up;
	uint64_t bytes;
	uint64_t done;
	pthread_barrier_t *bar;
	double end;
	char err[128];
};

static void *xfer_run(void *arg)
{
	struct xfer *x = arg;
	char *rbuf = x->up ? NULL : malloc(BUF);
	unsigned char hdr[9];
	hdr[0] = x->up ? 'U' : 'D';
	put_be64(hdr + 1, x->bytes);
	pthread_barrier_wait(x->bar);
	if (send_all(x->fd, hdr, 9) < 0) {
		snprintf(x->err, sizeof(x->err), "send header: %s", strerror(errno));
		goto out;
	}
	if (x->up) {
		while (x->done < x->bytes) {
			size_t n = x->bytes - x->done < BUF ? x->bytes - x->done : BUF;
			ssize_t w = send(x->fd, g_buf, n, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				snprintf(x->err, sizeof(x->err), "send after %llu bytes: %s",
					 (unsigned long long)x->done,
					 errno == EAGAIN ? "stalled (timeout)" : strerror(errno));
				goto out;
			}
			x->done += (uint64_t)w;
		}
		char k;
		int r = recv_all(x->fd, &k, 1);
		if (r < 0 || k != 'K') {
			snprintf(x->err, sizeof(x->err), "no ack after upload: %s",
				 r == -2 ? "EOF" : errno == EAGAIN ? "stalled (timeout)"
								   : strerror(errno));
			goto out;
		}
	} else {
		while (x->done < x->bytes) {
			size_t n = x->bytes - x->done < BUF ? x->bytes - x->done : BUF;
			ssize_t r = recv(x->fd, rbuf, n, 0);
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				snprintf(x->err, sizeof(x->err), "recv after %llu bytes: %s",
					 (unsigned long long)x->done,
					 r == 0 ? "EOF" : errno == EAGAIN ? "stalled (timeout)"
									 : strerror(errno));
				goto out;
			}
			x->done += (uint64_t)r;
		}
	}
out:
	x->end = now_s();
	free(rbuf);
	return NULL;
}

static int transfer(int up, int port, uint64_t bytes, int conns, double timeout_s)
{
	struct xfer *xs = calloc((size_t)conns, sizeof(*xs));
	pthread_t *th = calloc((size_t)conns, sizeof(*th));
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, (unsigned)conns + 1);
	for (int i = 0; i < conns; i++) {
		xs[i].fd = dial(port, timeout_s);
		if (xs[i].fd < 0) {
			printf("ERR connect: %s\n", strerror(errno));
			return 1;
		}
		xs[i].up = up;
		xs[i].bytes = bytes / (uint64_t)conns;
		xs[i].bar = &bar;
	}
	/* The tunnel opens its channel while we connect: one echo-free round trip proves every
	 * connection is through before the clock starts (a zero-byte upload gets its "K"). */
	for (int i = 0; i < conns; i++) {
		unsigned char hdr[9] = {'U'};
		char k;
		put_be64(hdr + 1, 0);
		if (send_all(xs[i].fd, hdr, 9) < 0 || recv_all(xs[i].fd, &k, 1) != 0) {
			printf("ERR connection %d not through the tunnel: %s\n", i, strerror(errno));
			return 1;
		}
	}
	for (int i = 0; i < conns; i++)
		pthread_create(&th[i], NULL, xfer_run, &xs[i]);
	double t0 = now_s();
	pthread_barrier_wait(&bar);
	double end = t0;
	uint64_t total = 0;
	const char *err = NULL;
	for (int i = 0; i < conns; i++) {
		pthread_join(th[i], NULL);
		if (xs[i].end > end)
			end = xs[i].end;
		total += xs[i].done;
		if (xs[i].err[0] && !err)
			err = xs[i].err;
	}
	for (int i = 0; i < conns; i++)
		close(xs[i].fd);
	if (err) {
		printf("ERR %s (%llu of %llu bytes moved in %.2fs)\n", err, (unsigned long long)total,
		       (unsigned long long)(bytes / (uint64_t)conns * (uint64_t)conns), end - t0);
		return 1;
	}
	printf("OK %.1f %.3f\n", total / 1e6 / (end - t0), end - t0);
	return 0;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{ /* nearest rank */
	int k = (int)(p / 100.0 * n + 0.999999);
	if (k < 1)
		k = 1;
	if (k > n)
		k = n;
	return v[k - 1];
}

static int pingpong(int port, int count, int size, int warmup)
{
	int fd = dial(port, 10.0);
	if (fd < 0) {
		printf("ERR connect: %s\n", strerror(errno));
		return 1;
	}
	char *b = malloc((size_t)size);
	double *lat = calloc((size_t)count, sizeof(double));
	if (send_all(fd, "E", 1) < 0)
		goto fail;
	for (int i = 0; i < warmup + count; i++) {
		double t0 = now_s();
		if (send_all(fd, g_buf, (size_t)size) < 0 || recv_all(fd, b, (size_t)size) != 0)
			goto fail;
		if (i >= warmup)
			lat[i - warmup] = (now_s() - t0) * 1e6;
	}
	close(fd);
	double sum = 0;
	for (int i = 0; i < count; i++)
		sum += lat[i];
	qsort(lat, (size_t)count, sizeof(double), cmp_d);
	printf("OK %.1f %.1f %.1f %.1f %.1f\n", pct(lat, count, 50), pct(lat, count, 99),
	       sum / count, lat[0], lat[count - 1]);
	return 0;
fail:
	printf("ERR round trip: %s\n", errno ? strerror(errno) : "EOF");
	return 1;
}

static int connect_rtt(int port, int count, int size)
{
	char *msg = malloc((size_t)size + 1);
	char *b = malloc((size_t)size);
	msg[0] = 'E';
	memcpy(msg + 1, g_buf, (size_t)size);
	double *lat = calloc((size_t)count, sizeof(double));
	int ok = 0, errors = 0;
	char first_err[128] = "";
	for (int i = 0; i < count; i++) {
		double t0 = now_s();
		errno = 0;
		int fd = dial(port, 5.0);
		int r = -1;
		if (fd >= 0) {
			r = send_all(fd, msg, (size_t)size + 1);
			if (r == 0)
				r = recv_all(fd, b, (size_t)size);
		}
		double dt = (now_s() - t0) * 1e6;
		if (r == 0) {
			lat[ok++] = dt;
		} else {
			if (!errors)
				snprintf(first_err, sizeof(first_err), "#%d: %s", i,
					 fd < 0 ? "connect failed"
					 : r == -2 ? "EOF before the echo"
					 : errno == EAGAIN ? "timeout (5s)" : strerror(errno));
			errors++;
		}
		if (fd >= 0)
			close(fd);
	}
	if (!ok) {
		printf("ERR all %d attempts failed; first %s\n", count, first_err);
		return 1;
	}
	double sum = 0;
	for (int i = 0; i < ok; i++)
		sum += lat[i];
	qsort(lat, (size_t)ok, sizeof(double), cmp_d);
	printf("OK %.1f %.1f %.1f %.1f %d%s%s\n", pct(lat, ok, 50), pct(lat, ok, 99), sum / ok,
	       lat[ok - 1], errors, errors ? " first_error " : "", first_err);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	fill_buf();
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return serve(argv[2], atoi(argv[3]));
	if (argc == 6 && (!strcmp(argv[1], "up") || !strcmp(argv[1], "down")))
		return transfer(argv[1][0] == 'u', atoi(argv[2]), strtoull(argv[3], NULL, 10),
				atoi(argv[4]), atof(argv[5]));
	if (argc == 6 && !strcmp(argv[1], "pingpong"))
		return pingpong(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
	if (argc == 5 && !strcmp(argv[1], "connect"))
		return connect_rtt(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: see the comment at the top of tcpbench.c\n");
	return 2;
}
