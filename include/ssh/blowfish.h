#pragma once
#include <stddef.h>
#include <stdint.h>

/* Blowfish (Schneier, 1993), kept only for bcrypt_pbkdf; not used as a cipher. */
struct blowfish {
	uint32_t p[18];
	uint32_t s[4][256];
};

/* Loads the initial state: P-array and S-boxes from the fractional hex digits of pi. */
void blowfish_init(struct blowfish *bf);

/*
 * The expensive key schedule step of Provos and Mazieres' bcrypt ("ExpandKey"): xors
 * `key` (repeated cyclically) into the P-array, then replaces P and the S-boxes by chained
 * encryptions, xoring `salt` (repeated cyclically) into each block first. With no salt
 * (salt_len 0) this is the plain Blowfish key schedule. An empty key is not mixed in.
 */
void blowfish_expand(struct blowfish *bf, const uint8_t *key, size_t key_len, const uint8_t *salt,
		     size_t salt_len);

/* Standard Blowfish key setup: blowfish_init() followed by blowfish_expand() without salt. */
void blowfish_set_key(struct blowfish *bf, const uint8_t *key, size_t key_len);

/* Encrypts one 64-bit block held as two big-endian halves, in place. */
void blowfish_encrypt(const struct blowfish *bf, uint32_t *left, uint32_t *right);
