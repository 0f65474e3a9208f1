#pragma once
#include <ev.h>
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
