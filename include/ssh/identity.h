#pragma once
#include <stddef.h>

#include "config.h"

/*
 * A user key held in memory for the daemon's lifetime, so a reconnect never touches the
 * file system (the key stays usable under ProtectSystem even if the file goes away).
 */
struct identity {
	char *private_key; /* the key, unencrypted if it was OpenSSH's format: secret, on
			    * pages of its own left out of core dumps (secret_pages_alloc) */
	size_t private_len;
	char *public_key; /* "ssh-ed25519 AAAA...", read from the key's public section */
	size_t public_len;
	char key_type[32]; /* "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", "" if unknown */
	char *passphrase;  /* a PEM key's (libssh2 decrypts those): NULL for OpenSSH keys */
	size_t passphrase_len;
};

/*
 * Loads identity_file and identity_passphrase_file of `cfg`, each opened once with
 * privfile_open() (no symlink, owner root or us, mode 0600 or stricter, checked on the
 * descriptor that is read), and decrypts an OpenSSH key. 0 or -errno with `err` set to
 * "identity file PATH: why".
 */
int identity_load(const struct tunnel_config *cfg, struct identity *ret, char *err,
		  size_t err_size);
/*
 * The same for proxy_jump_identity_file and its passphrase file: the key every proxy_jump
 * hop authenticates with. An empty identity (private_key NULL) when unset: the hops then
 * use the tunnel's own identity. Messages say "proxy_jump identity file PATH: why".
 */
int identity_load_jump(const struct tunnel_config *cfg, struct identity *ret, char *err,
		       size_t err_size);
/*
 * Fills public_key, public_len and key_type from the public section of the OpenSSH key
 * text in id->private_key (stored unencrypted even in an encrypted key). 0, -ENOTSUP (not
 * OpenSSH's format), -EINVAL (malformed) or -ENOMEM.
 */
int identity_read_public(struct identity *id);
/* Why sshkey_decrypt_openssh() failed, in words: "wrong passphrase", ... */
const char *identity_decrypt_error(int r);
void identity_finish(struct identity *id);
