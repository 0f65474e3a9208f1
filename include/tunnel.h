#pragma once
#include <ev.h>
#include <libssh2.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "backoff.h"
#include "buffer.h"
#include "config.h"
#include "health.h"
#include "identity.h"
#include "list.h"
#include "sessmem.h"
#include "status.h"

struct tunnel;

/* Most bytes one link reads from its socket per loop iteration: a peer that streams
 * without pause cannot keep the loop from its timers and the other tunnels. */
#define LINK_READ_BUDGET (256 * 1024)
/* The out-buffer's hard limit: past it the server is not reading and the link fails. */
#define LINK_OUT_MAX (16 * 1024 * 1024)
/* Receive window of a local_forward channel: what a client that reads nothing can make
 * the session hold for it (libssh2's default, 2 MiB, stays for remote_forward channels). */
#define FORWARD_WINDOW (512 * 1024)

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
};

/* A local_forward listener, bound for the tunnel's whole life. */
struct listener {
	struct tunnel *tunnel;
	size_t forward; /* index into cfg->forwards and stats */
	int fd;
	ev_io io;
	ev_timer pause; /* accept paused after EMFILE/ENFILE */
	ev_tstamp last_warn;
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
	struct list link;      /* in tunnel->conns */
	struct list open_link; /* in tunnel->open_queue while CONN_OPENING */
	struct tunnel *tunnel;
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
	ev_tstamp probe_started;
	struct buffer up;   /* client -> channel bytes the window did not take yet */
	struct buffer down; /* channel -> client bytes the client did not take yet */
};

enum link_step {
	LINK_RESOLVING,
	LINK_TCP_CONNECT,
	LINK_HANDSHAKE,
	LINK_AUTH_KEY,
	LINK_AUTH_AGENT,
	LINK_KEEPALIVE_CHANNEL,
	LINK_REMOTE_FORWARDS,
	LINK_READY,
};

/* The SSH connection of a tunnel; exists only while connecting or up. */
struct link {
	bool active;
	enum link_step step;
	int fd;
	LIBSSH2_SESSION *session;
	LIBSSH2_AGENT *agent;
	struct libssh2_agent_publickey *agent_identity;
	LIBSSH2_CHANNEL *keepalive_channel; /* NULL: fall back to global keepalives */
	bool keepalive_pending;
	ev_tstamp keepalive_sent;
	size_t remote_next; /* next remote forward to request */
	struct remote_listener *remotes;
	struct addrinfo *addrs, *addr;
	struct gaicb *gai;
	ev_timer resolve_poll;
	ev_io rio, wio;
	struct buffer out; /* bytes libssh2 sent that the socket did not take yet */
	bool rx_drained;   /* recv saw EAGAIN since the socket was last readable */
	bool rx_progress;  /* recv returned data during the current pump */
	int io_error;	   /* errno of a socket failure, 0 while healthy */
	bool dead;	   /* no more socket I/O: sends are dropped, recvs fail */
	int unread_seen;   /* FIONREAD when nothing can drain the socket (no channels) */
	ev_tstamp last_rx;
	ev_tstamp last_tx;   /* the socket last took bytes, or bytes started waiting */
	bool out_overflow;   /* the out-buffer passed LINK_OUT_MAX */
	unsigned rx_iteration; /* loop iteration rx_budget belongs to */
	size_t rx_budget;      /* bytes recv may still read in that iteration */
	struct sessmem mem;    /* what libssh2 holds for this session */
};

/*
 * Where a tunnel's local_forward listeners come from and go back to: the daemon keeps
 * them open across tunnel and process restarts. NULL ops: bind, and close at the end.
 */
struct listen_ops {
	void *userdata;
	/* A non-blocking listening socket on host:port (numeric); fd or -errno. */
	int (*open)(void *userdata, const char *host, uint16_t port);
	/* The tunnel is done with fd, a socket `open` returned. */
	void (*close)(void *userdata, int fd);
};

struct tunnel {
	struct ev_loop *loop;
	const struct listen_ops *listen; /* NULL: net_listen() and close() */
	const struct tunnel_config *cfg;
	struct identity identity;
	enum tunnel_state state;
	struct timespec since;
	ev_tstamp since_mono;
	char last_error[256];
	bool auth_failure; /* the last failure needs a human: retry at auth_retry_interval */
	uint64_t reconnects;
	bool ever_up;
	struct backoff backoff;
	ev_timer timer;	  /* backoff wait, connect deadline or keepalive tick */
	ev_prepare flush; /* flush the out-buffer and pump once per loop iteration */
	bool pump_wanted;
	struct link link;
	struct listener *listeners; /* one per forward; fd -1 for remote forwards */
	struct forward_stats *stats;
	size_t n_forwards;
	struct list conns;
	struct list open_queue;
	struct rtt_estimator rtt; /* keepalive round trips of the current session */
	enum tunnel_health health;
	ev_timer probe_timer; /* every probe_interval while up */
	void (*on_state)(struct tunnel *t, void *userdata);
	void *userdata;
};

/*
 * Creates a tunnel and gets its local listeners from `listen` (NULL: binds them). Does not
 * connect yet. Takes over `identity` (loaded by the caller with identity_load(), so that a
 * reload can find a bad key before it stops the running tunnel), also on failure: it is
 * zeroed. `listen` must outlive the tunnel. Returns 0 or -errno with a message in err.
 */
int tunnel_create(struct ev_loop *loop, const struct tunnel_config *cfg,
		  struct identity *identity, const struct listen_ops *listen,
		  struct tunnel **ret, char *err, size_t err_size);
void tunnel_start(struct tunnel *t);
/* Drops the session now (if any) and connects again without waiting for backoff. */
void tunnel_reconnect(struct tunnel *t, const char *why);
void tunnel_destroy(struct tunnel *t);
/* Copies the tunnel's state into `out` (forwards are allocated). 0 or -ENOMEM. */
int tunnel_snapshot(const struct tunnel *t, struct status_tunnel *out);

/* Internal to the engine: tunnel.c <-> link.c <-> forward.c. */
void tunnel_fail(struct tunnel *t, bool needs_human, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tunnel_pump(struct tunnel *t);
void tunnel_want_pump(struct tunnel *t);
bool tunnel_out_full(const struct tunnel *t);

int link_open(struct tunnel *t);
void link_close(struct tunnel *t, bool goodbye);
void link_setup_session(struct tunnel *t);
/* Advances connecting by one resumable step; returns when libssh2 wants more input. */
void link_step(struct tunnel *t);
/* True when a libssh2 error code means the whole session is gone. */
bool ssh_error_fatal(int rc);
/* What a connecting link is waiting for, for error messages. */
const char *link_step_str(enum link_step step);
const char *ssh_last_error(struct tunnel *t);
/* The session's memory limit now: session_memory_max plus what open channels are owed. */
size_t link_memory_cap(const struct tunnel *t);
int link_flush(struct tunnel *t);

void tunnel_link_ready(struct tunnel *t);

void forward_accept_cb(struct ev_loop *loop, ev_io *w, int revents);
void forward_pause_cb(struct ev_loop *loop, ev_timer *w, int revents);
void forward_tunnel_up(struct tunnel *t);
void forward_tunnel_down(struct tunnel *t);
int forward_pump(struct tunnel *t);
bool forward_drain(struct tunnel *t);
void forward_resume_clients(struct tunnel *t);
void conn_destroy(struct conn *c);
/* A conn on t's list; one with a client or target fd (>= 0) counts as a connection. */
struct conn *conn_new(struct tunnel *t, size_t forward, int fd, enum conn_state state);
/* Closes the client side and releases the channel without waiting on the network. */
void conn_close(struct conn *c);

/* Target probes (probe.c): started when the tunnel is up, stopped when it goes down. */
void probe_start(struct tunnel *t);
void probe_stop(struct tunnel *t);
/* The probe's channel opened: send the protocol hello or finish. 0, -1 (conn gone) or
 * a fatal rc. */
int probe_opened(struct conn *c);
/* Reads the probe's answer when one is expected. 0, -1 (conn gone) or a fatal rc. */
int probe_pump(struct conn *c);
/* A forward's target answered (a probe or a client's channel open) or did not. */
void tunnel_target_result(struct tunnel *t, size_t forward, bool reachable, const char *why);
/* Recomputes the health; tells the daemon when it or a target state changed. */
void tunnel_health_update(struct tunnel *t, bool targets_changed);
