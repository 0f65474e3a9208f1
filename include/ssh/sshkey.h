#pragma once
#include <stddef.h>

/*
 * The most bcrypt rounds an encrypted key may ask for. The KDF runs in the event loop at
 * start and at reload, and the rounds are whatever the key file says: 2^32 would hang the
 * daemon for years. ssh-keygen's default is 16 and `-a` values of 100 or a few hundred are
 * in use; one round costs about 6 ms here (2026-12, 2-core box, two 32-byte bcrypt blocks
 * as aes256-ctr needs), so the cap bounds a key's decryption to about 3 s.
 */
#ifndef SSHKEY_BCRYPT_ROUNDS_MAX /* the fuzzer lowers it to stay fast */
#define SSHKEY_BCRYPT_ROUNDS_MAX 500
#endif

/*
 * Decrypts an OpenSSH private key ("-----BEGIN OPENSSH PRIVATE KEY-----", openssh-key-v1)
 * with `passphrase`, so the slow bcrypt KDF runs once at load instead of inside libssh2 on
 * every authentication. On success *ret is a new NUL-terminated heap buffer (*ret_len bytes
 * without the NUL) holding the same key unencrypted (cipher and kdf "none"), in the PEM
 * armour ssh-keygen writes; it is secret: release it with free_secret(). An unencrypted input
 * is returned as an exact copy, with any passphrase ignored.
 *
 * Returns 0, or -EINVAL (not openssh-key-v1, malformed, or a NUL byte in `pem`), -EACCES
 * (encrypted and the passphrase is wrong or empty), -ERANGE (more than
 * SSHKEY_BCRYPT_ROUNDS_MAX bcrypt rounds; refused before any work), -ENOTSUP (cipher or KDF
 * we do not know), -ENOMEM, or -EIO (libcrypto failure). *ret and *ret_len are untouched
 * on failure.
 *
 * Ciphers: aes128/192/256-ctr (ssh-keygen's default is aes256-ctr), aes128/192/256-cbc,
 * aes128/256-gcm@openssh.com, chacha20-poly1305@openssh.com and 3des-cbc; KDF: bcrypt.
 */
int sshkey_decrypt_openssh(const char *pem, size_t pem_len, const char *passphrase,
			   size_t passphrase_len, char **ret, size_t *ret_len);
