#pragma once
#include <ev.h>
#include <libssh2.h>
#include <netdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer.h"
#include "config.h"
#include "dialer.h"
#include "identity.h"
#include "sessmem.h"

/* What kind of failure ended a session: it decides the wait before the next attempt. */
enum link_failure {
	LINK_FAILURE_NETWORK, /* timeouts, resets, protocol errors */
	LINK_FAILURE_REFUSED, /* refused, no route, closed before the banner: answered at once */
	LINK_FAILURE_HUMAN,   /* authentication or host key: needs a human, retried slowly */
};

/*
 * The engine's bottom layer (private to the engine): one SSH session over a byte stream —
 * resolving and connecting, the handshake, the host-key check, authentication,
 * keepalives, the output buffer and its flush, the high-water mark, liveness and round
 * trips. It knows nothing of tunnels or forwards: it reports upward through link_ops, and
 * the layer above reads and writes channels of the link's session, which it opens through
 * link_channel_open() (the link's keepalives are channel opens too).
 *
 * Contract of the ops (each called from the loop, never from inside a libssh2 call):
 *   on_ready   authenticated: channels may be opened now.
 *   on_fail    the session is over (the reason is for logs and status; why: which kind of
 *              failure, for the wait before the next attempt). The upper layer must
 *              link_close() it, from the callback or later; the link touches nothing after
 *              calling it.
 *   on_input   the session may have input for channels: read them (once ready). Returns 0,
 *              or a libssh2 error code that ends the session.
 *   on_drained the output buffer fell below the high-water mark: clients may be read again.
 *   on_rtt     a keepalive was answered after `seconds`.
 *   allowance  bytes of session memory owed beyond session_memory_max (open channels'
 *              windows): libssh2 may hold their unread data.
 *   drain      reads pending input through any channel or listener of the upper layer when
 *              the link has no channel of its own to do it; false when there is none.
 */
struct link_ops {
	void *userdata;
	void (*on_ready)(void *userdata);
	void (*on_fail)(void *userdata, enum link_failure why, const char *reason);
	int (*on_input)(void *userdata);
	void (*on_drained)(void *userdata);
	void (*on_rtt)(void *userdata, double seconds);
	size_t (*allowance)(void *userdata);
	bool (*drain)(void *userdata);
};

/* Most bytes one link reads from its socket per loop iteration: a peer that streams
 * without pause cannot keep the loop from its timers and the other tunnels. */
#define LINK_READ_BUDGET (256 * 1024)
/* The out-buffer's hard limit: past it the server is not reading and the link fails. */
#define LINK_OUT_MAX (16 * 1024 * 1024)
/* The out-buffer size above which clients stop being read (backpressure). */
#define LINK_OUT_HIGH_WATER (1024 * 1024)
/* Most bytes a stream link holds read from its channel: past it the channel is not read and
 * its window closes. */
#define LINK_STREAM_IN_MAX (256 * 1024)

enum link_step {
	LINK_RESOLVING,
	LINK_TCP_CONNECT,
	LINK_HANDSHAKE,
	LINK_AUTH_KEY,
	LINK_AUTH_AGENT,
	LINK_READY,
};

/* Who to reach and how to prove who we are: copied pointers, owned by the caller. */
struct link_params {
	const char *name; /* for log lines: "tunnel NAME" */
	const char *host;
	uint16_t port;
	const char *user;
	const struct identity *identity; /* NULL: agent only */
	const char *identity_file;	 /* for messages */
	bool use_agent;
	const char *agent_socket; /* NULL: $SSH_AUTH_SOCK */
	const char *known_hosts_file;
	enum host_key_policy host_key_policy;
	uint64_t keepalive_interval_ms;
	unsigned keepalive_count_max;
	uint64_t session_memory_max;
	uint64_t connect_stagger_ms; /* a TCP connect's wait for a fresh attempt; 0: the default */
};

/* The default wait before an unanswered TCP connect gets a fresh attempt beside it: RFC
 * 8305's Connection Attempt Delay, well above a LAN's round trip. */
#define LINK_CONNECT_STAGGER_MS 250

/* One SSH session; all zero (and fd -1) while closed. */
struct link {
	struct ev_loop *loop;
	struct link_params p;
	struct link_ops ops;
	bool active;
	bool failed; /* on_fail was called: waiting for link_close */
	enum link_step step;
	int fd;
	LIBSSH2_SESSION *session;
	LIBSSH2_AGENT *agent;
	struct libssh2_agent_publickey *agent_identity;
	/*
	 * Keepalives (link_run.c): a channel open of a type no server knows, which the server
	 * refuses at once (one round trip, nothing opened); libssh2 1.10 keeps one open's
	 * state per session, so they take turns with the opens of the layer above
	 * (link_channel_open). Global requests stand in while one cannot go.
	 */
	bool keepalive_pending;		  /* our open is in flight, its answer awaited */
	bool keepalive_wanted;		  /* due while an open of the layer above was in flight */
	bool keepalive_global;		  /* the server accepted our open: global requests only */
	bool keepalive_warm;		  /* one was answered: the next answers are timed */
	bool open_busy;			  /* an open of the layer above is in flight */
	const void *open_owner;		  /* who started it (link_channel_open_as) */
	bool global_busy;		  /* a global request of the layer above awaits its reply */
	LIBSSH2_CHANNEL *keepalive_stray; /* the open it accepted, being closed */
	double keepalive_sent;		  /* our last open (0: none yet) */
	double global_sent;		  /* the last global keepalive request (0: none yet) */
	struct addrinfo *addrs;
	struct gaicb *gai;
	struct dialer dial; /* the TCP connect (the first hop only) */
	ev_timer resolve_poll;
	ev_timer liveness; /* keepalives and the dead-peer deadline while ready */
	ev_io rio, wio;
	ev_prepare flush; /* pump if asked and flush the out-buffer once per loop iteration */
	ev_idle again;	  /* no blocking while a pump asked for during the last one waits */
	bool pump_wanted;
	struct buffer out; /* bytes libssh2 sent that the socket did not take yet */
	bool rx_drained;   /* recv saw EAGAIN since the socket was last readable */
	bool rx_progress;  /* recv returned data during the current pump */
	int io_error;	   /* errno of a socket failure, 0 while healthy */
	int session_error; /* a libssh2 code the upper layer found fatal, 0 while healthy */
	bool dead;	   /* no more socket I/O: sends are dropped, recvs fail */
	int unread_seen;   /* FIONREAD when nothing can drain the socket (no channels) */
	double last_rx;
	double last_tx;	       /* the socket last took bytes, or bytes started waiting */
	bool out_overflow;     /* the out-buffer passed LINK_OUT_MAX */
	unsigned rx_iteration; /* loop iteration rx_budget belongs to */
	size_t rx_budget;      /* bytes recv may still read in that iteration */
	struct sessmem mem;    /* what libssh2 holds for this session */
	/* ProxyJump: the session runs over a direct-tcpip channel of the hop below instead of
	 * a socket (fd is then a placeholder libssh2 can fcntl). The channel belongs to the
	 * path that opened it; stream_in holds what was read from it for libssh2. */
	struct link *below;
	LIBSSH2_CHANNEL *stream;
	struct buffer stream_in;
	uint64_t stream_read; /* read from the channel, in all (its window is the path's) */
	bool stream_eof;
};

/* Starts resolving and connecting; reports through ops from then on. */
void link_open(struct link *l, struct ev_loop *loop, const struct link_params *p,
	       const struct link_ops *ops);
/* Starts a session over `channel`, a direct-tcpip channel of `below`'s session (ProxyJump).
 * The caller keeps the channel and calls link_stream_pump() from below's on_input. */
void link_open_stream(struct link *l, struct ev_loop *loop, const struct link_params *p,
		      const struct link_ops *ops, struct link *below, LIBSSH2_CHANNEL *channel);
/* Moves bytes between a stream link and its channel both ways and pumps the link. Called
 * from the hop below's on_input (its session may be used then). 0 or a fatal libssh2 code
 * of the hop below. */
int link_stream_pump(struct link *l);
/* Closes without waiting on the network; `goodbye` sends a disconnect message first if the
 * socket takes it right away. Safe on a closed link. */
void link_close(struct link *l, bool goodbye);
/* Asks for one pump (on_input) before the loop next blocks. */
void link_want_pump(struct link *l);
/* The upper layer hit a session-fatal libssh2 error outside a pump: fail on the next one. */
void link_session_error(struct link *l, int rc);
/*
 * Opens a channel (libssh2_channel_open_ex's arguments): every open on a link's session goes
 * through here, since libssh2 1.10 keeps one open's state per session and the link's
 * keepalives are opens too. 0 with *ret set; LIBSSH2_ERROR_EAGAIN to call again with the
 * same arguments when the link pumps next (the open, or a keepalive before it, waits for
 * the server); or the libssh2 error that ended the open (link_last_error() says why).
 * Once an open is started, its caller must carry it to the end.
 */
int link_channel_open(struct link *l, LIBSSH2_CHANNEL **ret, const char *type, unsigned type_len,
		      unsigned window, unsigned packet, const char *msg, unsigned msg_len);
/* The same, for one of several users of the session's opens: an open in flight belongs to
 * the `owner` that started it, and another owner gets LIBSSH2_ERROR_EAGAIN (nothing sent)
 * until it ends; the layer above is then pumped again. link_channel_open() is owner NULL. */
int link_channel_open_as(struct link *l, const void *owner, LIBSSH2_CHANNEL **ret, const char *type,
			 unsigned type_len, unsigned window, unsigned packet, const char *msg,
			 unsigned msg_len);
/*
 * A global request with want-reply of the layer above (tcpip-forward) may go now: false
 * when a reply to one of the link's own global keepalives may still come, since libssh2
 * 1.10 would take it as the answer (it matches replies by type only). True reserves the
 * replies: no global keepalive goes until link_global_request_end().
 */
bool link_global_request_begin(struct link *l);
void link_global_request_end(struct link *l);
/* A direct-tcpip channel to host:port (RFC 4254 7.2) with a receive window of `window`,
 * through link_channel_open(); host names longer than 255 bytes fail (LIBSSH2_ERROR_INVAL). */
int link_direct_tcpip(struct link *l, LIBSSH2_CHANNEL **ret, const char *host, unsigned port,
		      const char *shost, unsigned sport, unsigned window);

bool link_ready(const struct link *l);
bool link_out_full(const struct link *l);
/* What the link is waiting for, for messages: "SSH banner and key exchange". */
const char *link_step_str(enum link_step step);
/* The reason for the last failure in words (socket, overflow or libssh2's message). */
const char *link_last_error(const struct link *l);
/* True when a libssh2 error code means the whole session is gone. */
bool ssh_error_fatal(int rc);

/*
 * Internal to the link layer, bottom up: link.c (socket I/O through libssh2's callbacks,
 * the out-buffer, allocators, failing), link_auth.c (the connecting steps after TCP),
 * link_run.c (connecting, pumping, keepalives, closing).
 */
enum link_progress {
	LINK_WAITING, /* libssh2 wants more input */
	LINK_DONE,    /* authenticated */
	LINK_FAILED,  /* link_fail was called */
};
int link_session_new(struct link *l);
int link_flush(struct link *l);
/* Ends the session (once): needs_human for authentication and host-key failures. */
void link_fail(struct link *l, bool needs_human, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void link_fail_as(struct link *l, enum link_failure why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void link_setup_session(struct link *l);
/* Advances the connecting steps as far as the input allows. */
enum link_progress link_step(struct link *l);
