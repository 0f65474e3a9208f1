#pragma once
#include "conn.h"

/*
 * Remote forwards' channels (private to the forward layer): what the server opens on a
 * remote forward's listener, admitted and connected to its local target.
 */

/* Accepts every channel the server opened for a remote forward. 0 or a fatal libssh2
 * code. */
int forward_accept_remotes(struct forwarder *fw);
