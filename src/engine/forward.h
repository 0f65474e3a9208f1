#pragma once
#include <ev.h>
#include <libssh2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"

/*
 * The engine's middle layer (private to the engine): local listeners, client connections
 * and their channels on the link below, remote forwards, target probes. It reads and
 * writes channels of the link's session and asks the link for pumps; it never changes the
 * tunnel's state: session-fatal errors are returned (or handed to link_session_error()
 * from a client's callback), and what it learns about targets goes up through
 * forward_ops.on_target.
 */

/* Binds (or gets from `listen`) the local listeners. 0 or -errno with a message in err. */
int forward_init(struct forwarder *fw, struct ev_loop *loop, const struct tunnel_config *cfg,
		 struct link *link, const struct listen_ops *listen, const struct forward_ops *ops,
		 char *err, size_t err_size);
/* Closes every conn and listener; safe after a failed forward_init. */
void forward_finish(struct forwarder *fw);
/* An equal configuration from a reload: only the pointer changes. */
void forward_set_config(struct forwarder *fw, const struct tunnel_config *cfg);
/* Starts accepting clients (held or refused while not up). */
void forward_start(struct forwarder *fw);
/* Asks the server for the remote forwards, resumably: 1 done, 0 again later, or a fatal
 * libssh2 code. */
int forward_request_remotes(struct forwarder *fw);
/* The session is ready: held clients get channels, probes start, targets are unknown. */
void forward_up(struct forwarder *fw);
/* The tunnel's first connection attempt failed: clients held by start_hold are closed
 * (counted as rejected, reason down) unless down_hold keeps them. */
void forward_attempt_failed(struct forwarder *fw);
/* The session is going away: its channels die with it; held clients wait. */
void forward_down(struct forwarder *fw);
/* Moves bytes between clients and channels, opens queued channels, accepts remote ones.
 * 0 or a fatal libssh2 code. */
int forward_pump(struct forwarder *fw);
/* Reads pending session input through any channel or listener; false when there is none
 * (an open in flight counts: it will read). */
bool forward_drain(struct forwarder *fw);
/* The link's out-buffer drained: read clients again. */
void forward_resume_clients(struct forwarder *fw);
/* Session memory the open channels are owed (their windows' worth of unread data). */
size_t forward_allowance(const struct forwarder *fw);
/* The receive windows of a forward's open channels: the largest and their sum. */
void forward_windows(const struct forwarder *fw, size_t forward, uint64_t *ret_largest,
		     uint64_t *ret_total);
