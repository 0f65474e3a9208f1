#pragma once
#include <libssh2.h>
#include <stddef.h>
#include <stdint.h>

enum hostkey_verdict {
	HOSTKEY_MATCH,
	HOSTKEY_MISMATCH,  /* known with this key type but another key: "HOST KEY CHANGED" */
	HOSTKEY_NOT_FOUND, /* host (or this key type) not in the file */
	HOSTKEY_ERROR,     /* file unreadable or unparsable; see err */
};

/*
 * Host-key algorithms the known_hosts file has for host:port, best first, as a libssh2
 * method list ("ssh-ed25519,ecdsa-sha2-nistp256"); "" when none are known. Lets the
 * handshake negotiate the key we can verify instead of libssh2's ecdsa-first default.
 */
void hostkey_known_methods(LIBSSH2_SESSION *session, const char *known_hosts_file,
			   const char *host, uint16_t port, char *buf, size_t size);

/* Checks the session's negotiated host key against the file. */
enum hostkey_verdict hostkey_check(LIBSSH2_SESSION *session, const char *known_hosts_file,
				   const char *host, uint16_t port, char *err, size_t err_size);

/* Appends the session's host key like OpenSSH does for accept-new. 0 or -errno. */
int hostkey_append(LIBSSH2_SESSION *session, const char *known_hosts_file, const char *host,
		   uint16_t port);

/* "ssh-ed25519 SHA256:base64" for log lines. */
void hostkey_describe(LIBSSH2_SESSION *session, char *buf, size_t size);
