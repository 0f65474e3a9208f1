#pragma once
#include <ev.h>
#include <libssh2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "config.h"
#include "link.h"
#include "list.h"
#include "listen.h"
#include "status.h"

/*
 * The forward layer's objects (private to the engine): the forwarder of a tunnel, its
 * listeners and client connections, and the per-forward records. conn.c makes and frees
 * conns; forward.c pumps their bytes; probe.c probes targets with client-less conns.
 */

/* Receive window a local_forward channel opens with, and keeps while it is not the limit:
 * what a client that reads nothing can make the session hold for it (libssh2's default,
 * 2 MiB, stays for remote_forward channels). Larger windows are granted as the link needs
 * them (window.h), within channel_window_max and the daemon-wide window_budget. */
#define FORWARD_WINDOW (512 * 1024)
/* Bytes read from a channel at a time. libssh2 1.10 tops a channel's window up to its
 * initial size plus the read size, so a channel at FORWARD_WINDOW holds this much more. */
#define FORWARD_READ_CHUNK (64 * 1024)

struct forward_ops {
	void *userdata;
	/* The session's round trip for sizing receive windows, seconds (0: not measured). */
	double (*rtt)(void *userdata);
	/* A probe or a client's channel open found the target of `forward` (un)reachable. */
	void (*on_target)(void *userdata, size_t forward, bool reachable, const char *why);
};

/* Counters per forward, kept across reconnects. */
struct forward_stats {
	uint64_t active;
	uint64_t connections_total;
	uint64_t bytes_in;  /* from the SSH peer towards the local side */
	uint64_t bytes_out; /* from the local side towards the SSH peer */
	uint64_t open_failures;
	uint64_t rejected[N_REJECT_REASONS]; /* clients closed unserved, by reason */
	/* What probes and clients' channel opens say of the target (local forwards). */
	enum target_state target_state;
	char target_error[256];
	bool probe_rtt_measured;
	double probe_rtt;
	uint64_t probe_failures;
	uint64_t window_charge; /* its channels' share of the window budget (window.h) */
};

struct forwarder;

/* A local_forward listener, bound for the tunnel's whole life. */
struct listener {
	struct forwarder *fw;
	size_t forward; /* index into cfg->forwards and stats */
	int fd;
	ev_io io;
	ev_timer pause; /* accept paused after EMFILE/ENFILE */
	double last_warn;
};

/* A remote_forward: the server-side listener of the current session. */
struct remote_listener {
	LIBSSH2_LISTENER *listener;
	size_t forward;
	bool failed;
};

enum conn_state {
	CONN_HELD,	 /* accepted while down, waiting up to down_hold */
	CONN_OPENING,	 /* queued for / in channel open */
	CONN_CONNECTING, /* remote forward: connecting to the local target */
	CONN_OPEN,
	CONN_CLOSING, /* client side gone; channel close in progress */
};

/* One client connection <-> one SSH channel. */
struct conn {
	struct list link;      /* in fw->conns */
	struct list open_link; /* in fw->open_queue while CONN_OPENING */
	struct forwarder *fw;
	size_t forward;
	enum conn_state state;
	int fd;
	LIBSSH2_CHANNEL *channel;
	ev_io rio, wio;
	ev_timer hold;
	uint16_t peer_port;
	char peer_host[64];
	bool client_eof;  /* client sent FIN: EOF forwarded to the channel */
	bool channel_eof; /* channel EOF seen: FIN sent to the client */
	bool hwm_blocked; /* client reads paused while the SSH out-buffer is full */
	bool eof_sent;	  /* EOF sent on the channel */
	bool probe;	  /* a target probe: no client, never counted as a connection */
	bool probe_done;  /* its outcome is recorded: the rest is cleanup */
	double probe_started;
	/* The receive window kept open (local forwards, window.h) and the epoch it is judged
	 * by: bytes the client took since epoch_start, and whether any had to wait. */
	uint64_t window;
	uint64_t window_charge;	 /* its share of the daemon-wide window budget */
	uint32_t window_pending; /* a grant libssh2 could not send yet (EAGAIN) */
	uint64_t epoch_bytes;
	double epoch_start;
	bool epoch_backlog;
	struct buffer up;   /* client -> channel bytes the window did not take yet */
	struct buffer down; /* channel -> client bytes the client did not take yet */
};

struct forwarder {
	struct ev_loop *loop;
	const struct tunnel_config *cfg;
	struct link *link;		 /* channels are opened only while `up` */
	const struct listen_ops *listen; /* NULL: net_listen() and close() */
	struct forward_ops ops;
	bool up; /* the session below is ready for channels */
	size_t n_forwards;
	struct forward_stats *stats;
	struct listener *listeners;	 /* one per forward; fd -1 for remote forwards */
	struct remote_listener *remotes; /* of the current session */
	size_t remote_next;		 /* next remote forward to request */
	struct list conns;
	struct list open_queue;
	ev_timer probe_timer; /* every probe_interval while up */
};

/* A conn on fw's list; one with a client or target fd (>= 0) counts as a connection. Its
 * watchers have no callbacks yet: the maker sets them. */
struct conn *conn_new(struct forwarder *fw, size_t forward, int fd, enum conn_state state);
/* Closes the client side and releases the channel without waiting on the network. */
void conn_close(struct conn *c);
/* Frees the conn now; its channel is already freed or dies with its session. */
void conn_destroy(struct conn *c);
/* Sets the conn's share of the window budget (window.h) and of its forward's. */
void conn_set_window_charge(struct conn *c, uint64_t charge);
/* Records what a probe or a client's channel open found out about a target, and tells the
 * layer above (forward_ops.on_target) when that changed. */
void forward_target(struct forwarder *fw, size_t forward, bool reachable, const char *why);
