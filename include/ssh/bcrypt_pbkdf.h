#pragma once
#include <stddef.h>
#include <stdint.h>

/* Longest output: 32 bcrypt hash blocks of 32 bytes, as OpenBSD defines the function. */
#define BCRYPT_PBKDF_MAX_OUTPUT 1024

/*
 * OpenBSD's bcrypt_pbkdf(3), the KDF of OpenSSH's openssh-key-v1 private keys: derives
 * `out_len` bytes from `password` and `salt` with `rounds` iterations of the bcrypt hash.
 * Returns 0, -EINVAL for an empty password or salt, zero rounds or an output length of 0
 * or above BCRYPT_PBKDF_MAX_OUTPUT, -ENOMEM, or -EIO if libcrypto fails. `out` is untouched
 * on failure.
 */
int bcrypt_pbkdf(const void *password, size_t password_len, const uint8_t *salt, size_t salt_len,
		 unsigned rounds, uint8_t *out, size_t out_len);
