#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

/*
 * Receive-window grants of local_forward channels (private to the forward layer, its
 * bottom): moletun grants a client's channel all of its window (conn.h) by the window rule
 * (window.h), and sizes the client socket's send queue with it.
 */

/* Bounds the kernel's send queue of a client or target socket (conn.h). */
void conn_set_sndbuf(struct conn *c, uint64_t bytes);
/* Bytes the client's socket holds that the client has not received (0 if unknown). */
uint64_t conn_client_queued(int fd);
/* A client's channel of a local forward: its window is moletun's to grant. */
bool conn_window_own(const struct conn *c);
/* Sends a grant that libssh2 could not send yet. 0, EAGAIN or a libssh2 error. */
int conn_window_flush(struct conn *c);
/* Grants the window's room, if it is worth a grant. 0 or a fatal code. */
int conn_window_grant(struct conn *c);
/* Nothing of the channel waits unread: judges the epoch and grants the window again.
 * 0 or a fatal code. */
int conn_window_update(struct conn *c);
/* `n` bytes were read for the client: the epoch counts them, and the window is granted
 * again. 0 or a fatal code. */
int conn_window_received(struct conn *c, uint64_t n);
