#pragma once
#include <libssh2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filedigest.h"

enum hostkey_verdict {
	HOSTKEY_MATCH,
	HOSTKEY_MISMATCH,  /* known with this key type but another key: "HOST KEY CHANGED" */
	HOSTKEY_NOT_FOUND, /* host (or this key type) not in the file */
	HOSTKEY_ERROR,     /* file unreadable or unparsable; see err */
};

/*
 * Host-key algorithms the known_hosts file has for host:port, best first, as a libssh2
 * method list ("ssh-ed25519,ecdsa-sha2-nistp256"); "" when none are known (or the file is
 * missing or refused: hostkey_check() reports that). Lets the
 * handshake negotiate the key we can verify instead of libssh2's ecdsa-first default.
 */
void hostkey_known_methods(LIBSSH2_SESSION *session, const char *known_hosts_file,
			   const char *host, uint16_t port, char *buf, size_t size);

/*
 * Checks the session's negotiated host key against the file, read through privfile_open()
 * (no symbolic link, owner root or us, not writable by group or others). A missing file is
 * HOSTKEY_NOT_FOUND when `missing_ok` (accept-new: the first key creates it), else
 * HOSTKEY_ERROR with "known_hosts file PATH: No such file or directory".
 */
enum hostkey_verdict hostkey_check(LIBSSH2_SESSION *session, const char *known_hosts_file,
				   bool missing_ok, const char *host, uint16_t port, char *err,
				   size_t err_size);

/*
 * Appends the session's host key like OpenSSH does for accept-new, creating the file (0600)
 * if needed; the line is fsync()ed to disk. 0 or -errno with a reason in `err`.
 */
int hostkey_append(LIBSSH2_SESSION *session, const char *known_hosts_file, const char *host,
		   uint16_t port, char *err, size_t err_size);

/* "ssh-ed25519 SHA256:base64" for log lines. */
void hostkey_describe(LIBSSH2_SESSION *session, char *buf, size_t size);

/* One host:port whose key a known_hosts file decides (a tunnel's server, or a bastion). */
struct hostkey_dest {
	const char *host;
	uint16_t port;
};

/*
 * The digest of what in the known_hosts file behind `fd` can decide the host key of one of
 * the `n` destinations: the lines libssh2 matches for one of them with any key type (as
 * hostkey_check() would), and lines it cannot parse (such a line fails every connection
 * that reads the file). Comments, blank lines and lines for other hosts leave it as it
 * is, so a reload after another host's key was added need not restart the tunnel. Reads
 * `fd` from offset 0 (pread: the position is left alone). 0 or -errno (*ret untouched).
 */
int hostkey_relevant_digest(int fd, const struct hostkey_dest *dests, size_t n,
			    struct file_digest *ret);
