#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"

/*
 * Receive-window grants of a forward's channels (private to the forward layer, its bottom):
 * moletun grants a local client's channel all of its window and grows a remote forward
 * channel's beyond libssh2's (conn.h), by the window rule (chanwin.h, window.h), and sizes
 * the client socket's send queue with it.
 */

/* Bounds the kernel's send queue of a client or target socket (conn.h). */
void conn_set_sndbuf(struct conn *c, uint64_t bytes);
/* Bytes the client's socket holds that the client has not received (0 if unknown). */
uint64_t conn_client_queued(int fd);
/* A client's or a remote forward target's channel: its window is moletun's to grow. */
bool conn_window_own(const struct conn *c);
/* Grants the window's room, if it is worth a grant. 0 or a fatal code. */
int conn_window_grant(struct conn *c);
/* Nothing of the channel waits unread: judges the epoch and grants the window again.
 * 0 or a fatal code. */
int conn_window_update(struct conn *c);
/* `n` bytes were read for the client: the epoch counts them, and the window is granted
 * again. 0 or a fatal code. */
int conn_window_received(struct conn *c, uint64_t n);
