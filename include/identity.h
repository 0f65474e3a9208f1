#pragma once
#include <stddef.h>

#include "config.h"

/*
 * A user key held in memory for the daemon's lifetime, so a reconnect never touches the
 * file system (the key stays usable under ProtectSystem even if the file goes away).
 */
struct identity {
	char *private_key; /* file contents: secret, zeroed on free */
	size_t private_len;
	char *public_key; /* "ssh-ed25519 AAAA...", read from the key's public section */
	size_t public_len;
	char key_type[32]; /* "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", "" if unknown */
	char *passphrase;  /* NULL when the key is not encrypted */
	size_t passphrase_len;
};

/* Loads identity_file and identity_passphrase_file of `cfg`. 0 or -errno with `err` set. */
int identity_load(const struct tunnel_config *cfg, struct identity *ret, char *err,
		  size_t err_size);
void identity_finish(struct identity *id);
