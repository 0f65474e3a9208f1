#pragma once
#include <ev.h>
#include <libssh2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "chanwin.h"
#include "config.h"
#include "link.h"
#include "list.h"
#include "listen.h"
#include "status.h"

/*
 * The forward layer's objects (private to the engine): the forwarder of a tunnel, its
 * listeners and client connections, and the per-forward records. conn.c makes and frees
 * conns; forward*.c let clients in and pump their bytes; probe.c probes targets with
 * client-less conns.
 */

/*
 * Receive windows of local_forward channels. A channel opens with no window and moletun
 * grants all of it (forward_window.c): libssh2 1.10 tops a window up to the size it was
 * opened with at every read, however much of the channel already waits unread in the
 * session, so a client that reads slower than the server sends would make the session hold
 * more and more. With no window of its own, libssh2 grants at most what one read asks for.
 * FORWARD_WINDOW is the first grant and the floor of the window rule (window.h): what a
 * client that reads nothing can make the session hold for it. Larger windows are granted
 * as the link needs them, within channel_window_max, the daemon-wide window_budget and
 * the memory account (memacct.h); while the account sheds, channels open with
 * FORWARD_WINDOW_SMALL.
 */
#define FORWARD_WINDOW	     (256 * 1024)
#define FORWARD_WINDOW_SMALL (64 * 1024)
/* Bytes read from a channel at a time (and what libssh2 may grant for one read). */
#define FORWARD_READ_CHUNK (64 * 1024)
/* The window a target probe opens with: it reads one byte. */
#define FORWARD_PROBE_WINDOW (4 * 1024)

/*
 * The kernel's queues of a client socket (and of a remote_forward's target socket). The
 * send queue is set with SO_SNDBUF: autotuning would let a client that stops reading fill
 * up to tcp_wmem's maximum (4M on Debian) per socket. It starts at CLIENT_SNDBUF and
 * follows a grown window (a quarter of it, at most CLIENT_SNDBUF_MAX), so that a client a
 * moment late does not idle a fast stream; the kernel allows twice the value, overhead
 * included. The receive queue is left to autotuning, which grows it only while moletun
 * reads fast; while moletun does not read the client it is charged at its size then
 * (SO_RCVBUF as the kernel reports it).
 */
#define CLIENT_SNDBUF	  (64 * 1024)
#define CLIENT_SNDBUF_MAX (1024 * 1024)
/*
 * What a client's connection may hold beyond its window at first, reserved in the memory
 * account while it is open: moletun's grants keep the session, the send queue and the
 * bytes moletun keeps for the client within the window, but libssh2 1.10 grants what a
 * read asks for as long as the kernel takes what is read, up to the send queue's bound,
 * and the read the kernel did not take waits in moletun.
 */
#define CONN_SLACK (2 * CLIENT_SNDBUF + FORWARD_READ_CHUNK)

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
	uint64_t memory;	/* what its conns hold in the memory account (memacct.h) */
};

/* What the data path's steps and a probe's return when the conn was closed (and may be
 * freed: not to be touched again). Positive, so it never collides with a libssh2 code
 * (all negative, LIBSSH2_ERROR_SOCKET_NONE being -1). */
#define CONN_GONE 1

struct forwarder;

/* A local_forward listener, bound for the tunnel's whole life. */
struct listener {
	struct forwarder *fw;
	size_t forward; /* index into cfg->forwards and stats */
	int fd;
	ev_io io;
	ev_timer pause; /* accept paused after EMFILE/ENFILE */
	double last_warn;
	double last_memory_warn; /* a client refused for memory was logged */
};

/* A remote_forward: the server-side listener of the current session. */
struct remote_listener {
	LIBSSH2_LISTENER *listener;
	size_t forward;
	bool failed;
};

enum conn_state {
	CONN_HELD,	 /* accepted while down, waiting up to down_hold; or waiting for
			  * room in the memory account (memory_wait) */
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
	bool memory_wait;	/* held until the memory account has room (forward_accept.c) */
	double memory_deadline; /* then closed, at this clock_now() */
	uint16_t peer_port;
	char peer_host[64];
	bool client_eof;  /* client sent FIN: EOF forwarded to the channel */
	bool channel_eof; /* channel EOF seen: FIN sent to the client */
	bool hwm_blocked; /* client reads paused while the SSH out-buffer is full */
	bool eof_sent;	  /* EOF sent on the channel */
	bool probe;	  /* a target probe: no client, never counted as a connection */
	bool probe_done;  /* its outcome is recorded: the rest is cleanup */
	double probe_started;
	/* The receive window (chanwin.h): local forwards' channels open with none and
	 * moletun grants all of it; a remote forward's channel opens with libssh2's default,
	 * which libssh2 keeps topping up, and moletun grants what the window grows beyond. */
	struct chanwin win;
	uint64_t window_charge;	 /* its share of the daemon-wide window budget */
	uint64_t client_queued;	 /* its socket's send queue at the last look (SIOCOUTQ) */
	uint64_t sndbuf;	 /* its socket's SO_SNDBUF as set (0: left to the kernel) */
	uint64_t rcvbuf_paused;	 /* its receive queue's size when it was last not read */
	uint64_t round_sent;	 /* sent to the client since the pump (or writability) came */
	/* Its shares of the memory account (memacct.h), and their sum in its forward's. */
	uint64_t acct_window, acct_buffer, acct_socket, acct_held;
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
	/* Its first connection attempt has not ended: clients wait under start_hold. */
	bool starting;
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
/* Brings the conn's shares of the memory account (memacct.h) and of its forward's up to
 * date: the window its server may still use (or the one reserved for its open), its
 * buffers, and the kernel's queues of its socket at their bounds. */
void conn_account(struct conn *c);
/* What the kernel may hold in the socket's receive queue now (SO_RCVBUF as it reports it,
 * overhead included); an unreadable value counts as the Debian default maximum. */
uint64_t conn_rcvbuf(int fd);
/* Records what a probe or a client's channel open found out about a target, and tells the
 * layer above (forward_ops.on_target) when that changed. */
void forward_target(struct forwarder *fw, size_t forward, bool reachable, const char *why);
