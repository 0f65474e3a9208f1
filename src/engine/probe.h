#pragma once
#include "conn.h"

/*
 * Target probes (private to the forward layer): every probe_interval, one client-less
 * conn per local forward opens a direct-tcpip channel to the target (and, for postgres,
 * sends the SSLRequest). forward.c starts and stops them and hands them their channel.
 */
void probe_start(struct forwarder *fw);
void probe_stop(struct forwarder *fw);
/* The probe's channel opened: send the protocol hello or finish. 0, CONN_GONE or a
 * fatal libssh2 code. */
int probe_opened(struct conn *c);
/* Reads the probe's answer. 0, CONN_GONE or a fatal libssh2 code. */
int probe_pump(struct conn *c);
