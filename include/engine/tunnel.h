#pragma once
#include <ev.h>
#include <libssh2.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "identity.h"
#include "listen.h"
#include "status.h"

/*
 * A tunnel: one [tunnel:NAME] kept up — the engine's top layer and its public face. It
 * owns a link (the SSH session, link.h) and a forwarder (listeners and connections,
 * forward.h) and is the only place its state changes: connecting, up, backoff.
 */
struct tunnel;

/* Called after every change of state, health or a target's reachability. */
typedef void (*tunnel_changed_fn)(struct tunnel *t, void *userdata);

/*
 * Creates a tunnel and gets its local listeners from `listen` (NULL: binds them). Does not
 * connect yet. Takes over `identity` (loaded by the caller with identity_load(), so that a
 * reload can find a bad key before it stops the running tunnel), also on failure: it is
 * zeroed. `listen` must outlive the tunnel. Returns 0 or -errno with a message in err.
 */
int tunnel_create(struct ev_loop *loop, const struct tunnel_config *cfg, struct identity *identity,
		  const struct listen_ops *listen, tunnel_changed_fn on_change, void *userdata,
		  struct tunnel **ret, char *err, size_t err_size);
void tunnel_start(struct tunnel *t);
/* Drops the session now (if any) and connects again without waiting for backoff. */
void tunnel_reconnect(struct tunnel *t, const char *why);
void tunnel_destroy(struct tunnel *t);
const struct tunnel_config *tunnel_config(const struct tunnel *t);
/* Points the tunnel at an equal configuration (a reload that left it unchanged). */
void tunnel_set_config(struct tunnel *t, const struct tunnel_config *cfg);
/* The window budget shared by every tunnel's channels ([moletun] window_budget). */
void tunnel_set_window_budget(uint64_t bytes);
/* Copies the tunnel's state into `out` (forwards are allocated). 0 or -ENOMEM. */
int tunnel_snapshot(const struct tunnel *t, struct status_tunnel *out);

/*
 * A job of the layer above on the tunnel's own session (the daemon's sidecar audit). The
 * engine runs it beside the forwards, never instead of them: on_up when the session is up,
 * on_input from every pump of the session while up (after the forwards'), on_down when the
 * session ends (its channels are gone with it: the job must not touch them again). All
 * three run on the loop, never inside a libssh2 call.
 *   on_input  0, or a libssh2 error code that ends the session (as the forwards' errors).
 *   busy      the job awaits the session (an open, a reply, a channel's data): the link
 *             keeps reading the socket for it.
 *   on_destroy the tunnel is being destroyed: the job frees itself (the tunnel owns it).
 */
struct tunnel_job_ops {
	void *userdata;
	void (*on_up)(void *userdata);
	int (*on_input)(void *userdata);
	bool (*busy)(void *userdata);
	void (*on_down)(void *userdata);
	void (*on_destroy)(void *userdata);
};

/* Gives the tunnel its job (one at most); on_up follows at once if the tunnel is up. */
void tunnel_set_job(struct tunnel *t, const struct tunnel_job_ops *ops);
/* The session while the tunnel is up, else NULL: for the job's libssh2 calls. */
LIBSSH2_SESSION *tunnel_session(struct tunnel *t);
/* Opens a channel for the job, taking turns with the forwards' opens and the keepalives:
 * as libssh2_channel_open_ex() in non-blocking mode (0 with *ret set, LIBSSH2_ERROR_EAGAIN
 * to call again with the same arguments, or the error; the session's last error says why). */
int tunnel_channel_open(struct tunnel *t, LIBSSH2_CHANNEL **ret, const char *type,
			unsigned type_len, unsigned window, unsigned packet, const char *msg,
			unsigned msg_len);
/* A global request with want-reply may go now (see link_global_request_begin); true
 * reserves the replies until tunnel_global_request_end(). */
bool tunnel_global_request_begin(struct tunnel *t);
void tunnel_global_request_end(struct tunnel *t);
/* Asks for a pump of the session (the job's on_input) before the loop next blocks. */
void tunnel_want_pump(struct tunnel *t);
/* Records what the sidecar audit found (shown by snapshots) and tells on_change. */
void tunnel_set_sidecar(struct tunnel *t, const struct status_sidecar *s);
