/*
 * delayrelay: a TCP relay that holds every chunk DELAY_MS milliseconds in each direction,
 * a long path's round trip for SSH (tc netem is not available here). It buffers without
 * limit, so it does not model TCP's own window or a bottleneck's queue: the receive
 * windows of the SSH channels are the only limit it leaves. One thread, epoll.
 *
 *   delayrelay LISTEN_PORT TARGET_PORT DELAY_MS [TARGET_ADDR]
 *   (listens on 127.0.0.1; the target is 127.0.0.1 unless TARGET_ADDR, IPv4, says otherwise)
 *
 * Prints "ready" once listening. Compiled on the fly by the benches (cc -O2).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)

struct chunk {
	struct chunk *next;
	double due;
	size_t len, off;
	char data[];
};

struct dir {
	int src, dst;
	struct chunk *head, *tail;
	int src_eof; /* src closed: shut dst down once the queue is empty */
	int dst_shut;
	int dst_blocked;
};

struct pair {
	struct dir d[2]; /* 0: client -> target, 1: target -> client */
	int fds[2];
	int closed;
};

static double delay;
static int ep;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nonblock(int fd)
{
	int one = 1;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* epoll data: the pair and which of its fds (0 client, 1 target) */
static void watch(struct pair *p, int which, int op)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP};

	ev.data.u64 = (uint64_t)(uintptr_t)p | (uint64_t)which;
	epoll_ctl(ep, op, p->fds[which], &ev);
}

static void pump_in(struct dir *d)
{
	while (!d->src_eof) {
		struct chunk *c = malloc(sizeof(*c) + CHUNK);
		ssize_t n;

		if (!c)
			exit(1);
		n = recv(d->src, c->data, CHUNK, 0);
		if (n <= 0) {
			free(c);
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				d->src_eof = 1;
			return;
		}
		if ((size_t)n < CHUNK / 2) {
			struct chunk *s = realloc(c, sizeof(*c) + (size_t)n);
			if (s)
				c = s;
		}
		c->next = NULL;
		c->due = now() + delay;
		c->len = (size_t)n;
		c->off = 0;
		if (d->tail)
			d->tail->next = c;
		else
			d->head = c;
		d->tail = c;
	}
}

/* Writes what is due; returns the next due time (0: nothing waits). */
static double pump_out(struct dir *d, double t)
{
	while (d->head && d->head->due <= t) {
		struct chunk *c = d->head;
		ssize_t n = send(d->dst, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				d->dst_blocked = 1;
				return 0;
			}
			d->src_eof = 1;
			while (d->head) {
				c = d->head;
				d->head = c->next;
				free(c);
			}
			d->tail = NULL;
			break;
		}
		c->off += (size_t)n;
		if (c->off < c->len) {
			d->dst_blocked = 1;
			return 0;
		}
		d->head = c->next;
		if (!d->head)
			d->tail = NULL;
		free(c);
	}
	d->dst_blocked = 0;
	if (!d->head && d->src_eof && !d->dst_shut) {
		shutdown(d->dst, SHUT_WR);
		d->dst_shut = 1;
	}
	return d->head ? d->head->due : 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	int lfd, one = 1, target_port;
	struct in_addr target_addr = {.s_addr = htonl(INADDR_LOOPBACK)};
	struct pair *pairs[4096];
	int n_pairs = 0;

	if ((argc != 4 && argc != 5) || (argc == 5 && inet_pton(AF_INET, argv[4], &target_addr) != 1)) {
		fprintf(stderr, "usage: delayrelay LISTEN_PORT TARGET_PORT DELAY_MS [TARGET_ADDR]\n");
		return 2;
	}
	target_port = atoi(argv[2]);
	delay = atof(argv[3]) / 1000.0;
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)atoi(argv[1]));
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 128) < 0) {
		perror("bind");
		return 1;
	}
	nonblock(lfd);
	ep = epoll_create1(0);
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
		epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct epoll_event evs[64];
		double t = now(), next = 0;
		int timeout = -1, n;

		for (int i = 0; i < n_pairs; i++) {
			struct pair *p = pairs[i];

			for (int k = 0; k < 2; k++) {
				double due = p->d[k].dst_blocked ? 0 : pump_out(&p->d[k], t);

				if (due > 0 && (next == 0 || due < next))
					next = due;
			}
			if (p->d[0].dst_shut && p->d[1].dst_shut && !p->d[0].head &&
			    !p->d[1].head) {
				close(p->fds[0]);
				close(p->fds[1]);
				free(p);
				pairs[i--] = pairs[--n_pairs];
			}
		}
		if (next > 0) {
			double ms = (next - now()) * 1000.0;
			timeout = ms < 0 ? 0 : (int)ms + 1;
		}
		n = epoll_wait(ep, evs, 64, timeout);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == 0) {
				int cfd;

				while ((cfd = accept(lfd, NULL, NULL)) >= 0) {
					struct sockaddr_in ta = {.sin_family = AF_INET};
					int tfd = socket(AF_INET, SOCK_STREAM, 0);
					struct pair *p = calloc(1, sizeof(*p));

					ta.sin_addr = target_addr;
					ta.sin_port = htons((uint16_t)target_port);
					if (!p || n_pairs >= 4096 ||
					    connect(tfd, (struct sockaddr *)&ta, sizeof(ta)) < 0) {
						close(cfd);
						close(tfd);
						free(p);
						continue;
					}
					nonblock(cfd);
					nonblock(tfd);
					p->fds[0] = cfd;
					p->fds[1] = tfd;
					p->d[0] = (struct dir){.src = cfd, .dst = tfd};
					p->d[1] = (struct dir){.src = tfd, .dst = cfd};
					pairs[n_pairs++] = p;
					watch(p, 0, EPOLL_CTL_ADD);
					watch(p, 1, EPOLL_CTL_ADD);
				}
				continue;
			}
			{
				struct pair *p =
				    (struct pair *)(uintptr_t)(evs[i].data.u64 & ~1ull);
				int which = (int)(evs[i].data.u64 & 1);
				uint32_t e = evs[i].events;

				/* fd `which` is src of d[which] and dst of d[1 - which] */
				if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
					pump_in(&p->d[which]);
				if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
					p->d[1 - which].dst_blocked = 0;
			}
		}
	}
}
