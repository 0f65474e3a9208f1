#pragma once
#include <libssh2.h>
#include <stdbool.h>
#include <stdint.h>

#include "audit.h"

/*
 * The audit's probes over an authenticated session (blocking libssh2, its timeout bounding
 * each step). Every probe is harmless: a channel that opens is closed at once without a
 * byte sent to its destination, a granted listen is cancelled at once, and the one command
 * asked for only echoes a marker. Each fills what the matching audit_judge_*() takes and
 * returns 0, or the libssh2 error code that ended the session (the caller stops there).
 */

/* Opens a session channel and asks it to run `echo MARKER` in a way only a shell turns
 * into the marker (see audit_probe.c); reads what comes back for a while. */
int audit_probe_session(LIBSSH2_SESSION *s, struct audit_session *ret);
/* A pty request on a new session channel (none when sessions are refused). */
int audit_probe_pty(LIBSSH2_SESSION *s, bool sessions_open, enum audit_pty *ret);
/* The sftp subsystem on a new session channel: whether an SFTP server answers its
 * version (libssh2_sftp_init), then shut at once. Never ends the audit: a dead session
 * shows in the next probe. */
int audit_probe_sftp(LIBSSH2_SESSION *s, bool sessions_open, enum audit_sftp *ret);
int audit_probe_direct_tcpip(LIBSSH2_SESSION *s, const char *host, uint16_t port,
			     enum audit_open *ret);
/* direct-streamlocal@openssh.com to a Unix socket path on the server. */
int audit_probe_streamlocal(LIBSSH2_SESSION *s, const char *path, enum audit_open *ret);
/* tcpip-forward for host:port (port 0: the server picks); cancelled when granted. */
int audit_probe_tcpip_forward(LIBSSH2_SESSION *s, const char *host, uint16_t port,
			      bool *ret_granted, unsigned *ret_bound_port);
