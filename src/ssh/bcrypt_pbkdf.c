#include "bcrypt_pbkdf.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "blowfish.h"

#define SHA512_LEN	  64
#define BCRYPT_HASH_LEN	  32
#define BCRYPT_HASH_WORDS (BCRYPT_HASH_LEN / 4)

/* The plaintext the bcrypt hash encrypts, as in OpenBSD (not the "OrpheanBeholder..." one). */
static const char bcrypt_magic[] = "OxychromaticBlowfishSwatDynamite";

static int sha512(EVP_MD_CTX *md, const void *data, size_t len, const void *suffix,
		  size_t suffix_len, uint8_t out[SHA512_LEN])
{
	if (EVP_DigestInit_ex(md, EVP_sha512(), NULL) != 1 ||
	    EVP_DigestUpdate(md, data, len) != 1 ||
	    (suffix_len > 0 && EVP_DigestUpdate(md, suffix, suffix_len) != 1) ||
	    EVP_DigestFinal_ex(md, out, NULL) != 1)
		return -EIO;
	return 0;
}

/*
 * The bcrypt hash of bcrypt_pbkdf: an Eksblowfish state keyed by both digests (64 rounds of
 * the expensive key schedule) encrypts the magic text 64 times; words come out little-endian.
 */
static void bcrypt_hash(const uint8_t sha2pass[SHA512_LEN], const uint8_t sha2salt[SHA512_LEN],
			uint8_t out[BCRYPT_HASH_LEN])
{
	struct blowfish bf;
	uint32_t text[BCRYPT_HASH_WORDS];

	blowfish_init(&bf);
	blowfish_expand(&bf, sha2pass, SHA512_LEN, sha2salt, SHA512_LEN);
	for (int i = 0; i < 64; i++) {
		blowfish_expand(&bf, sha2salt, SHA512_LEN, NULL, 0);
		blowfish_expand(&bf, sha2pass, SHA512_LEN, NULL, 0);
	}
	for (int i = 0; i < BCRYPT_HASH_WORDS; i++) {
		const unsigned char *p = (const unsigned char *)bcrypt_magic + 4 * i;

		text[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	}
	for (int i = 0; i < 64; i++)
		for (int w = 0; w < BCRYPT_HASH_WORDS; w += 2)
			blowfish_encrypt(&bf, &text[w], &text[w + 1]);
	for (int i = 0; i < BCRYPT_HASH_WORDS; i++) {
		out[4 * i] = (uint8_t)text[i];
		out[4 * i + 1] = (uint8_t)(text[i] >> 8);
		out[4 * i + 2] = (uint8_t)(text[i] >> 16);
		out[4 * i + 3] = (uint8_t)(text[i] >> 24);
	}
	explicit_bzero(&bf, sizeof(bf));
	explicit_bzero(text, sizeof(text));
}

/*
 * Each output block n (from 1) is the xor of `rounds` chained bcrypt hashes; its bytes are
 * spread over the output with a stride of the block count, so that every block is needed to
 * recover any prefix of the key.
 */
int bcrypt_pbkdf(const void *password, size_t password_len, const uint8_t *salt, size_t salt_len,
		 unsigned rounds, uint8_t *out, size_t out_len)
{
	uint8_t sha2pass[SHA512_LEN], sha2salt[SHA512_LEN];
	uint8_t hash[BCRYPT_HASH_LEN], sum[BCRYPT_HASH_LEN];
	uint8_t key[BCRYPT_PBKDF_MAX_OUTPUT];
	size_t blocks = (out_len + BCRYPT_HASH_LEN - 1) / BCRYPT_HASH_LEN;
	EVP_MD_CTX *md;
	int r;

	if (password_len == 0 || salt_len == 0 || rounds == 0 || out_len == 0 ||
	    out_len > BCRYPT_PBKDF_MAX_OUTPUT)
		return -EINVAL;
	md = EVP_MD_CTX_new();
	if (!md)
		return -ENOMEM;
	r = sha512(md, password, password_len, NULL, 0, sha2pass);
	for (size_t block = 0; r == 0 && block < blocks; block++) {
		uint32_t n = (uint32_t)block + 1;
		uint8_t counter[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
				      (uint8_t)n};

		r = sha512(md, salt, salt_len, counter, sizeof(counter), sha2salt);
		if (r < 0)
			break;
		bcrypt_hash(sha2pass, sha2salt, hash);
		memcpy(sum, hash, sizeof(sum));
		for (unsigned round = 1; round < rounds; round++) {
			r = sha512(md, hash, sizeof(hash), NULL, 0, sha2salt);
			if (r < 0)
				break;
			bcrypt_hash(sha2pass, sha2salt, hash);
			for (size_t i = 0; i < sizeof(sum); i++)
				sum[i] ^= hash[i];
		}
		for (size_t i = 0; i < sizeof(sum) && i * blocks + block < out_len; i++)
			key[i * blocks + block] = sum[i];
	}
	if (r == 0)
		memcpy(out, key, out_len);
	EVP_MD_CTX_free(md);
	explicit_bzero(sha2pass, sizeof(sha2pass));
	explicit_bzero(sha2salt, sizeof(sha2salt));
	explicit_bzero(hash, sizeof(hash));
	explicit_bzero(sum, sizeof(sum));
	explicit_bzero(key, sizeof(key));
	return r;
}
