#pragma once
#include <ev.h>

#include "diag.h"
#include "status.h"

/*
 * A reply the daemon gives later (alert-test waits for webhooks): the client stays
 * connected, the loop goes on. Whoever takes one must finish it exactly once.
 */
struct control_deferred;

/*
 * Sends "header LF body" to the waiting client and frees `d`. Harmless when the client
 * has gone (timed out, server destroyed): then only frees. May be called from within the
 * op that took `d`; `header` is "ok ..." or "error ...".
 */
void control_deferred_finish(struct control_deferred *d, const char *header, const char *body,
			     size_t body_len);

/* What the control server asks of the daemon; every call is synchronous and short. */
struct control_ops {
	void *userdata;
	/* Snapshot of one tunnel (name) or all (name == NULL); -ENOENT if unknown. */
	int (*snapshot)(void *userdata, const char *name, struct status *ret);
	/* Drop and re-establish one tunnel (or all when name == NULL); -ENOENT if unknown. */
	int (*reconnect)(void *userdata, const char *name);
	/* Reload the configuration; on failure returns -EINVAL with every error in `errors`. */
	int (*reload)(void *userdata, struct diag *errors);
	/*
	 * Send a test event to alert target `name` (all when NULL). Returns 0 after taking
	 * `reply` (finish it when the results are in), or -ENOENT (no such target or none
	 * configured) / another -errno without taking it.
	 */
	int (*alert_test)(void *userdata, const char *name, struct control_deferred *reply);
};

struct control_server;

#define CONTROL_CLIENTS_MAX 32	/* concurrent clients; see control_server_create() */
#define CONTROL_TIMEOUT_SEC 5.0 /* to send the request, then again to take the reply */

/* A deferred reply (alert-test) not finished by then gets "error timeout". */
#define CONTROL_DEFERRED_TIMEOUT_SEC 25.0

/*
 * Listens on `path` (stale socket removed, mode 0660, group `group` when not NULL).
 * Returns 0 or a negative errno; *ret untouched on failure. Besides errors from the
 * socket calls: -ENAMETOOLONG (path too long for sun_path), -EINVAL (unknown group,
 * logged), -EEXIST (path exists and is not a socket), -EADDRINUSE (a live daemon
 * answers on path). The protocol is described in control_proto.h.
 *
 * At most CONTROL_CLIENTS_MAX clients are served at once. When all slots are taken, a
 * newcomer takes the slot of the client that has waited longest without sending a whole
 * request (that one gets "error busy"), so idle connections cannot lock ctl out; only when
 * every client is being answered is the newcomer told "error busy".
 *
 * The ops are called from the loop while a client waits; they must not destroy the
 * server (defer that, e.g. with an ev_idle, when a reload moves the socket).
 */
int control_server_create(struct ev_loop *loop, const char *path, const char *group,
			  const struct control_ops *ops, struct control_server **ret);
/*
 * Serves `fd`, a listening socket inherited from the service manager, when it is a
 * stream socket bound to `path` and a connect to `path` reaches it; the file is kept (it
 * is not removed at the end either: the socket outlives the process). Mode and group are
 * set as control_server_create() does. On failure fd stays the caller's: -EINVAL (not a
 * listening stream socket), -EADDRNOTAVAIL (bound to another path), -ENOENT / -EEXIST
 * (the path is gone or not a socket), -EADDRINUSE (the path leads to another socket).
 */
int control_server_adopt(struct ev_loop *loop, int fd, const char *path, const char *group,
			 const struct control_ops *ops, struct control_server **ret);
/* The listening socket, e.g. to hand to the service manager's FD store. */
int control_server_fd(const struct control_server *s);
/* The socket outlives this process (it is in the FD store): destroy leaves its file. */
void control_server_keep_path(struct control_server *s);
/* Closes every client, removes the socket file if it is still ours. Accepts NULL. */
void control_server_destroy(struct control_server *s);

/* Overrides CONTROL_TIMEOUT_SEC (tests use a short one). */
void control_server_set_timeout(struct control_server *s, double seconds);

/* Clients currently connected (for tests and debug logs). */
size_t control_server_clients(const struct control_server *s);
