#pragma once
#include <ev.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * TCP connects to one resolved host (private to the engine, below the link). A connect not
 * answered within `stagger` gets a fresh attempt beside it — a new socket, to the next
 * address that has not failed — so a SYN lost to a path that has since come back is not
 * left to the kernel, which resends it 1 s later (then each second for the first four with
 * net.ipv4.tcp_syn_linear_timeouts = 4, as on recent kernels; else after 2 s, 4 s, ...).
 * At most DIALER_INFLIGHT_MAX are in flight: the oldest makes room for the next. The first to
 * connect wins and the others are closed. An address that answers with an error (refused, no route)
 * gets no more attempts; when every one has, the dial fails with that error. Nothing here times
 * out: the caller's deadline ends a dial with dialer_stop().
 */
#define DIALER_INFLIGHT_MAX 4
/* Addresses of one name taken into account; more are ignored. */
#define DIALER_ADDRS_MAX 32

/* The dial is over: fd >= 0 connected (the callee owns it, err 0), or fd -1 and -errno. */
typedef void (*dialer_done_fn)(void *userdata, int fd, int err);

struct dialer;

struct dialer_attempt {
	struct dialer *d;
	ev_io io; /* writable: the connect ended */
	int fd;	  /* -1: a free slot */
	unsigned addr;
	unsigned number; /* 1 for the dial's first attempt */
	double started;	 /* clock_now() */
};

struct dialer {
	struct ev_loop *loop;
	bool active;
	const struct addrinfo *addrs[DIALER_ADDRS_MAX]; /* not owned */
	unsigned n_addrs;
	uint32_t failed; /* bit i: addrs[i] answered with an error */
	unsigned next;	 /* the address of the next attempt */
	ev_timer stagger;
	struct dialer_attempt att[DIALER_INFLIGHT_MAX];
	unsigned attempts; /* started in this dial */
	int error;	   /* the last failure, -errno */
	dialer_done_fn done;
	void *userdata;
	/* After a dial that connected, for the caller's log: which attempt won, after how long
	 * (its own connect time: about one round trip). */
	unsigned won_by;
	double won_after;
};

/*
 * Starts the first attempt. 0 while attempts are in flight (done is called later, from the
 * loop, exactly once unless dialer_stop() comes first), or -errno when every address failed
 * at once (done is not called). stagger <= 0: one attempt at a time, in address order.
 */
int dialer_start(struct dialer *d, struct ev_loop *loop, const struct addrinfo *addrs,
		 double stagger, dialer_done_fn done, void *userdata);
/* Closes every attempt; done is not called. Safe on a stopped or all-zero dialer. */
void dialer_stop(struct dialer *d);
