#pragma once
#include <ev.h>
#include <stddef.h>

#include "conn.h"

/*
 * The data path (private to the forward layer): bytes between a client, or a remote
 * forward's target, and its channel, in both directions.
 */

/* "LISTEN -> TARGET" of the conn's forward, for log lines. */
const char *conn_label(const struct conn *c, char *buf, size_t size);
/* The client's bytes to the channel (its rio watcher). */
void conn_client_readable(struct ev_loop *loop, ev_io *w, int revents);
/* The channel's pending bytes to the client, or a remote forward target's connect done
 * (its wio watcher). */
void conn_client_writable(struct ev_loop *loop, ev_io *w, int revents);
/* Sends EOF to the channel once every client byte went through. 0, CONN_GONE or a
 * fatal libssh2 code. */
int conn_forward_client_eof(struct conn *c);
/* Retries bytes the channel window refused earlier. 0, CONN_GONE or a fatal code. */
int conn_flush_up(struct conn *c);
/* Moves channel data to the client until the channel is empty or the client is full.
 * 0, CONN_GONE or a fatal libssh2 code. */
int conn_read_channel(struct conn *c);
