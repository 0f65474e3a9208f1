#include "sshkey.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "bcrypt_pbkdf.h"
#include "util.h"

/* The layout is OpenSSH's PROTOCOL.key. */
#define PEM_BEGIN	"-----BEGIN OPENSSH PRIVATE KEY-----"
#define PEM_END		"-----END OPENSSH PRIVATE KEY-----"
#define PEM_WRAP	70		 /* base64 columns per line, as ssh-keygen writes them */
#define KEY_MAGIC	"openssh-key-v1" /* stored with its NUL */
#define NONE_BLOCK_SIZE 8		 /* OpenSSH pads unencrypted private sections to 8 bytes */
#define KEY_IV_MAX	64
#define TAG_LEN		16

struct cipher_spec;
typedef int (*decrypt_fn)(const struct cipher_spec *spec, const uint8_t *key_iv, const uint8_t *in,
			  size_t len, const uint8_t *tag, uint8_t *out);

struct cipher_spec {
	const char *name;
	const EVP_CIPHER *(*evp)(void);
	size_t key_len;
	size_t iv_len;
	size_t block_size; /* the encrypted section is a whole number of these */
	size_t tag_len;	   /* AEAD tag stored right after the encrypted section, 0 if none */
	decrypt_fn decrypt;
};

/* The parts of an openssh-key-v1 blob we need; pointers into the decoded blob. */
struct key_blob {
	const uint8_t *cipher_name, *kdf_name, *kdf_options, *public_key, *private_section;
	uint32_t cipher_name_len, kdf_name_len, kdf_options_len, public_key_len,
	    private_section_len;
	const uint8_t *trailer; /* everything after the private section: the AEAD tag, if any */
	size_t trailer_len;
};

struct reader {
	const uint8_t *p;
	size_t left;
};

static int read_u32(struct reader *r, uint32_t *ret)
{
	if (r->left < 4)
		return -EINVAL;
	*ret = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	r->left -= 4;
	return 0;
}

static int read_string(struct reader *r, const uint8_t **ret, uint32_t *ret_len)
{
	uint32_t len;

	if (read_u32(r, &len) < 0 || r->left < len)
		return -EINVAL;
	*ret = r->p;
	*ret_len = len;
	r->p += len;
	r->left -= len;
	return 0;
}

static bool string_is(const uint8_t *s, uint32_t len, const char *text)
{
	return len == strlen(text) && memcmp(s, text, len) == 0;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static uint8_t *put_string(uint8_t *p, const void *s, uint32_t len)
{
	p = put_u32(p, len);
	memcpy(p, s, len);
	return p + len;
}

/* AES-CTR, AES-CBC, 3DES-CBC: plain EVP decryption, no padding (the format pads itself). */
static int decrypt_plain(const struct cipher_spec *spec, const uint8_t *key_iv, const uint8_t *in,
			 size_t len, const uint8_t *tag, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n, final_len, r = -EIO;

	if (!ctx)
		return -ENOMEM;
	if (len <= INT_MAX &&
	    EVP_DecryptInit_ex(ctx, spec->evp(), NULL, key_iv, key_iv + spec->key_len) == 1 &&
	    EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
	    EVP_DecryptUpdate(ctx, out, &n, in, (int)len) == 1 &&
	    EVP_DecryptFinal_ex(ctx, out + n, &final_len) == 1 && (size_t)n + final_len == len)
		r = 0;
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

/*
 * aes*-gcm@openssh.com: the KDF's 12-byte IV is used as is (OpenSSH increments it only after
 * the first message), no additional data, and the tag follows the encrypted section.
 */
static int decrypt_gcm(const struct cipher_spec *spec, const uint8_t *key_iv, const uint8_t *in,
		       size_t len, const uint8_t *tag, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n, final_len, r = -EIO;

	if (!ctx)
		return -ENOMEM;
	if (len > INT_MAX || EVP_DecryptInit_ex(ctx, spec->evp(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)spec->iv_len, NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, key_iv, key_iv + spec->key_len) != 1 ||
	    EVP_DecryptUpdate(ctx, out, &n, in, (int)len) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int)spec->tag_len, (void *)tag) != 1)
		goto out;
	/* a tag mismatch is what a wrong passphrase looks like for an AEAD cipher */
	r = EVP_DecryptFinal_ex(ctx, out + n, &final_len) == 1 ? 0 : -EACCES;
out:
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

static int poly1305(const uint8_t key[32], const uint8_t *in, size_t len, uint8_t out[TAG_LEN])
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_POLY1305, NULL);
	EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
	size_t out_len;
	int r = -EIO;

	if (ctx && EVP_MAC_init(ctx, key, 32, NULL) == 1 && EVP_MAC_update(ctx, in, len) == 1 &&
	    EVP_MAC_final(ctx, out, &out_len, TAG_LEN) == 1 && out_len == TAG_LEN)
		r = 0;
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return r;
}

/*
 * chacha20-poly1305@openssh.com as OpenSSH uses it for a packet with sequence number 0 and no
 * length header: only the first 32 key bytes matter; the Poly1305 key is the ChaCha20 block 0
 * keystream, the data is ChaCha20 from block 1. OpenSSL's 16-byte ChaCha20 IV is the 64-bit
 * little-endian block counter followed by the 64-bit nonce (the sequence number, 0).
 */
static int decrypt_chachapoly(const struct cipher_spec *spec, const uint8_t *key_iv,
			      const uint8_t *in, size_t len, const uint8_t *tag, uint8_t *out)
{
	static const uint8_t zero_block[32];
	uint8_t iv[16] = {0}, poly_key[32], expected_tag[TAG_LEN];
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n, r = -EIO;

	if (!ctx)
		return -ENOMEM;
	if (len > INT_MAX || EVP_EncryptInit_ex(ctx, spec->evp(), NULL, key_iv, iv) != 1 ||
	    EVP_EncryptUpdate(ctx, poly_key, &n, zero_block, sizeof(zero_block)) != 1)
		goto out;
	r = poly1305(poly_key, in, len, expected_tag);
	if (r < 0)
		goto out;
	if (CRYPTO_memcmp(expected_tag, tag, TAG_LEN) != 0) {
		r = -EACCES;
		goto out;
	}
	iv[0] = 1;
	r = -EIO;
	if (EVP_DecryptInit_ex(ctx, spec->evp(), NULL, key_iv, iv) == 1 &&
	    EVP_DecryptUpdate(ctx, out, &n, in, (int)len) == 1 && (size_t)n == len)
		r = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	explicit_bzero(poly_key, sizeof(poly_key));
	return r;
}

static const struct cipher_spec ciphers[] = {
    {"aes128-ctr", EVP_aes_128_ctr, 16, 16, 16, 0, decrypt_plain},
    {"aes192-ctr", EVP_aes_192_ctr, 24, 16, 16, 0, decrypt_plain},
    {"aes256-ctr", EVP_aes_256_ctr, 32, 16, 16, 0, decrypt_plain},
    {"aes128-cbc", EVP_aes_128_cbc, 16, 16, 16, 0, decrypt_plain},
    {"aes192-cbc", EVP_aes_192_cbc, 24, 16, 16, 0, decrypt_plain},
    {"aes256-cbc", EVP_aes_256_cbc, 32, 16, 16, 0, decrypt_plain},
    {"3des-cbc", EVP_des_ede3_cbc, 24, 8, 8, 0, decrypt_plain},
    {"aes128-gcm@openssh.com", EVP_aes_128_gcm, 16, 12, 16, TAG_LEN, decrypt_gcm},
    {"aes256-gcm@openssh.com", EVP_aes_256_gcm, 32, 12, 16, TAG_LEN, decrypt_gcm},
    /* 64 key bytes: OpenSSH's second half keys the packet length, unused for key files */
    {"chacha20-poly1305@openssh.com", EVP_chacha20, 64, 0, 8, TAG_LEN, decrypt_chachapoly},
};

static const struct cipher_spec *cipher_find(const uint8_t *name, uint32_t len)
{
	for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++)
		if (string_is(name, len, ciphers[i].name))
			return &ciphers[i];
	return NULL;
}

/* Finds the armour and base64-decodes what it encloses into a new heap buffer. */
static int pem_decode(const char *pem, size_t pem_len, uint8_t **ret, size_t *ret_len)
{
	const char *begin = memmem(pem, pem_len, PEM_BEGIN, strlen(PEM_BEGIN));
	const char *end;
	size_t body_len;
	uint8_t *raw;
	ssize_t n;

	/* a key file is text: a NUL byte would make C string functions see another file */
	if (!begin || memchr(pem, '\0', pem_len))
		return -EINVAL;
	begin += strlen(PEM_BEGIN);
	end = memmem(begin, pem_len - (size_t)(begin - pem), PEM_END, strlen(PEM_END));
	if (!end)
		return -EINVAL;
	body_len = (size_t)(end - begin);
	raw = malloc(body_len + 1);
	if (!raw)
		return -ENOMEM;
	n = base64_decode(begin, body_len, raw, body_len + 1);
	if (n < 0) {
		free_secret((char *)raw, body_len + 1);
		return -EINVAL;
	}
	*ret = raw;
	*ret_len = (size_t)n;
	return 0;
}

static int blob_parse(const uint8_t *raw, size_t raw_len, struct key_blob *ret)
{
	struct reader r = {raw, raw_len};
	struct key_blob blob;
	uint32_t key_count;

	if (raw_len < sizeof(KEY_MAGIC) || memcmp(raw, KEY_MAGIC, sizeof(KEY_MAGIC)) != 0)
		return -EINVAL;
	r.p += sizeof(KEY_MAGIC);
	r.left -= sizeof(KEY_MAGIC);
	if (read_string(&r, &blob.cipher_name, &blob.cipher_name_len) < 0 ||
	    read_string(&r, &blob.kdf_name, &blob.kdf_name_len) < 0 ||
	    read_string(&r, &blob.kdf_options, &blob.kdf_options_len) < 0 ||
	    read_u32(&r, &key_count) < 0 || key_count != 1 ||
	    read_string(&r, &blob.public_key, &blob.public_key_len) < 0 ||
	    read_string(&r, &blob.private_section, &blob.private_section_len) < 0)
		return -EINVAL;
	blob.trailer = r.p;
	blob.trailer_len = r.left;
	*ret = blob;
	return 0;
}

/* The two check ints open every private section; they differ after a wrong key. */
static bool check_ints_match(const uint8_t *section, size_t len)
{
	return len >= 8 && memcmp(section, section + 4, 4) == 0;
}

/* An unencrypted key is only copied, after checking it is one we could have produced. */
static int copy_unencrypted(const struct key_blob *blob, const char *pem, size_t pem_len,
			    char **ret, size_t *ret_len)
{
	char *copy;

	if (!string_is(blob->kdf_name, blob->kdf_name_len, "none") || blob->kdf_options_len != 0 ||
	    blob->trailer_len != 0 || blob->private_section_len % NONE_BLOCK_SIZE != 0 ||
	    !check_ints_match(blob->private_section, blob->private_section_len))
		return -EINVAL;
	copy = malloc(pem_len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, pem, pem_len);
	copy[pem_len] = '\0';
	*ret = copy;
	*ret_len = pem_len;
	return 0;
}

/* Decrypts the private section into a new heap buffer of the same length. */
static int decrypt_section(const struct key_blob *blob, const struct cipher_spec *spec,
			   const char *passphrase, size_t passphrase_len, uint8_t **ret)
{
	struct reader options = {blob->kdf_options, blob->kdf_options_len};
	uint8_t key_iv[KEY_IV_MAX];
	const uint8_t *salt;
	uint32_t salt_len, rounds;
	uint8_t *plain;
	int r;

	if (!string_is(blob->kdf_name, blob->kdf_name_len, "bcrypt"))
		return string_is(blob->kdf_name, blob->kdf_name_len, "none") ? -EINVAL : -ENOTSUP;
	if (read_string(&options, &salt, &salt_len) < 0 || read_u32(&options, &rounds) < 0 ||
	    options.left != 0 || salt_len == 0 || rounds == 0)
		return -EINVAL;
	if (rounds > SSHKEY_BCRYPT_ROUNDS_MAX)
		return -ERANGE;
	if (blob->private_section_len < spec->block_size ||
	    blob->private_section_len % spec->block_size != 0 || blob->trailer_len != spec->tag_len)
		return -EINVAL;
	if (!passphrase || passphrase_len == 0)
		return -EACCES;
	plain = malloc(blob->private_section_len);
	if (!plain)
		return -ENOMEM;
	r = bcrypt_pbkdf(passphrase, passphrase_len, salt, salt_len, rounds, key_iv,
			 spec->key_len + spec->iv_len);
	if (r == 0)
		r = spec->decrypt(spec, key_iv, blob->private_section, blob->private_section_len,
				  blob->trailer, plain);
	if (r == 0 && !check_ints_match(plain, blob->private_section_len))
		r = -EACCES;
	explicit_bzero(key_iv, sizeof(key_iv));
	if (r < 0) {
		free_secret((char *)plain, blob->private_section_len);
		return r;
	}
	*ret = plain;
	return 0;
}

/* Armours an openssh-key-v1 blob the way ssh-keygen does: base64 lines of 70 columns. */
static int pem_encode(const uint8_t *raw, size_t raw_len, char **ret, size_t *ret_len)
{
	size_t b64_len = (raw_len + 2) / 3 * 4;
	size_t lines = (b64_len + PEM_WRAP - 1) / PEM_WRAP;
	size_t size = strlen(PEM_BEGIN) + 1 + b64_len + lines + strlen(PEM_END) + 1 + 1;
	char *b64 = malloc(b64_len + 1);
	char *pem = malloc(size);
	char *p = pem;

	if (!b64 || !pem) {
		free(b64);
		free(pem);
		return -ENOMEM;
	}
	base64_encode(raw, raw_len, b64, b64_len + 1, true);
	p = stpcpy(p, PEM_BEGIN "\n");
	for (size_t off = 0; off < b64_len; off += PEM_WRAP) {
		size_t n = b64_len - off < PEM_WRAP ? b64_len - off : PEM_WRAP;

		memcpy(p, b64 + off, n);
		p += n;
		*p++ = '\n';
	}
	p = stpcpy(p, PEM_END "\n");
	free_secret(b64, b64_len + 1);
	*ret = pem;
	*ret_len = (size_t)(p - pem);
	return 0;
}

/* Rebuilds the blob with cipher and KDF "none" around the decrypted private section. */
static int encode_unencrypted(const struct key_blob *blob, const uint8_t *plain, char **ret,
			      size_t *ret_len)
{
	static const char none[] = "none";
	size_t raw_len = sizeof(KEY_MAGIC) + 2 * (4 + strlen(none)) + 4 + 4 + 4 +
			 blob->public_key_len + 4 + blob->private_section_len;
	uint8_t *raw = malloc(raw_len);
	uint8_t *p = raw;
	int r;

	if (!raw)
		return -ENOMEM;
	memcpy(p, KEY_MAGIC, sizeof(KEY_MAGIC));
	p += sizeof(KEY_MAGIC);
	p = put_string(p, none, strlen(none));
	p = put_string(p, none, strlen(none));
	p = put_string(p, "", 0);
	p = put_u32(p, 1);
	p = put_string(p, blob->public_key, blob->public_key_len);
	put_string(p, plain, blob->private_section_len);
	r = pem_encode(raw, raw_len, ret, ret_len);
	free_secret((char *)raw, raw_len);
	return r;
}

int sshkey_decrypt_openssh(const char *pem, size_t pem_len, const char *passphrase,
			   size_t passphrase_len, char **ret, size_t *ret_len)
{
	const struct cipher_spec *spec;
	struct key_blob blob;
	uint8_t *raw = NULL, *plain = NULL;
	size_t raw_len = 0;
	int r;

	if (!pem)
		return -EINVAL;
	r = pem_decode(pem, pem_len, &raw, &raw_len);
	if (r < 0)
		return r;
	r = blob_parse(raw, raw_len, &blob);
	if (r < 0)
		goto out;
	if (string_is(blob.cipher_name, blob.cipher_name_len, "none")) {
		r = copy_unencrypted(&blob, pem, pem_len, ret, ret_len);
		goto out;
	}
	spec = cipher_find(blob.cipher_name, blob.cipher_name_len);
	if (!spec) {
		r = -ENOTSUP;
		goto out;
	}
	r = decrypt_section(&blob, spec, passphrase, passphrase_len, &plain);
	if (r < 0)
		goto out;
	r = encode_unencrypted(&blob, plain, ret, ret_len);
	free_secret((char *)plain, blob.private_section_len);
out:
	free_secret((char *)raw, raw_len);
	return r;
}
