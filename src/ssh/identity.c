#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "privfile.h"
#include "sshkey.h"
#include "util.h"

#define KEY_FILE_MAX (64 * 1024)
#define PASSPHRASE_FILE_MAX 4096
#define STRINGIFY(x) #x
#define TEXT_OF(x) STRINGIFY(x)
#define ROUNDS_MAX_TEXT TEXT_OF(SSHKEY_BCRYPT_ROUNDS_MAX)
#define OPENSSH_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----"
#define OPENSSH_END "-----END OPENSSH PRIVATE KEY-----"
#define OPENSSH_MAGIC "openssh-key-v1"

struct reader {
	const unsigned char *p;
	size_t left;
};

static int read_string(struct reader *r, const unsigned char **ret, uint32_t *ret_len)
{
	uint32_t len;

	if (r->left < 4)
		return -EINVAL;
	len = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	if (r->left - 4 < len)
		return -EINVAL;
	*ret = r->p + 4;
	*ret_len = len;
	r->p += 4 + len;
	r->left -= 4 + len;
	return 0;
}

/*
 * The public half of an openssh-key-v1 file is stored unencrypted, so we can hand libssh2
 * the public key without decrypting (the bcrypt KDF is deliberately slow).
 */
int identity_read_public(struct identity *id)
{
	const char *begin = strstr(id->private_key, OPENSSH_BEGIN);
	/* after the whole BEGIN line: "-----BEGIN ...-----END ...-----" overlaps the two */
	const char *end = begin ? strstr(begin + strlen(OPENSSH_BEGIN), OPENSSH_END) : NULL;
	const unsigned char *field, *blob, *type;
	uint32_t len, blob_len, type_len;
	unsigned char *raw;
	struct reader r;
	ssize_t n;
	int rc = -EINVAL;

	if (!begin || !end)
		return -ENOTSUP;
	begin += strlen(OPENSSH_BEGIN);
	raw = malloc((size_t)(end - begin));
	if (!raw)
		return -ENOMEM;
	n = base64_decode(begin, (size_t)(end - begin), raw, (size_t)(end - begin));
	if (n < (ssize_t)sizeof(OPENSSH_MAGIC) || memcmp(raw, OPENSSH_MAGIC, sizeof(OPENSSH_MAGIC)))
		goto out;
	r.p = raw + sizeof(OPENSSH_MAGIC);
	r.left = (size_t)n - sizeof(OPENSSH_MAGIC);
	/* ciphername, kdfname, kdfoptions, then the key count */
	for (int i = 0; i < 3; i++)
		if (read_string(&r, &field, &len) < 0)
			goto out;
	if (r.left < 4)
		goto out;
	r.p += 4;
	r.left -= 4;
	if (read_string(&r, &blob, &blob_len) < 0)
		goto out;
	{
		struct reader br = {blob, blob_len};

		if (read_string(&br, &type, &type_len) < 0 || type_len >= sizeof(id->key_type))
			goto out;
	}
	memcpy(id->key_type, type, type_len);
	id->key_type[type_len] = '\0';
	id->public_len = type_len + 1 + ((size_t)blob_len + 2) / 3 * 4;
	id->public_key = malloc(id->public_len + 1);
	if (!id->public_key) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(id->public_key, type, type_len);
	id->public_key[type_len] = ' ';
	base64_encode(blob, blob_len, id->public_key + type_len + 1, id->public_len - type_len, true);
	rc = 0;
out:
	/* the decoded blob of an unencrypted key is the private key itself */
	free_secret((char *)raw, (size_t)(end - begin));
	return rc;
}

const char *identity_decrypt_error(int r)
{
	switch (r) {
	case -EACCES:
		return "wrong passphrase";
	case -ERANGE:
		return "encrypted with more bcrypt rounds than moletun's limit of " ROUNDS_MAX_TEXT
		       " (re-encrypt it: ssh-keygen -p -a 100 -f FILE)";
	case -ENOTSUP:
		return "cipher or key derivation not supported";
	case -EINVAL:
		return "malformed OpenSSH private key";
	default:
		return strerror(-r);
	}
}

/* Reads a key or passphrase file through privfile_open(): checked on the descriptor read. */
static int read_private(const char *what, const char *path, size_t max, char **ret,
			size_t *ret_len, char *err, size_t err_size)
{
	struct privfile_result res;
	char why[160];
	int fd = privfile_open(path, O_RDONLY, PRIVFILE_MODE_SECRET, &res);
	int r;

	if (fd < 0) {
		privfile_describe(&res, why, sizeof(why));
		snprintf(err, err_size, "%s %s: %s", what, path, why);
		return res.problem == PRIVFILE_ERRNO ? -res.error : -EPERM;
	}
	r = privfile_read(fd, max, ret, ret_len);
	close(fd);
	if (r < 0)
		snprintf(err, err_size, "%s %s: %s", what, path, strerror(-r));
	return r;
}

/* Moves a secret from the heap onto pages left out of core dumps. */
static int to_secret_pages(char **p, size_t len)
{
	char *pages = secret_pages_alloc(len + 1);

	if (!pages)
		return -ENOMEM;
	memcpy(pages, *p, len);
	free_secret(*p, len);
	*p = pages;
	return 0;
}

/*
 * An encrypted PEM key decrypted once, here, with OpenSSL (what libssh2 does with it), and
 * written back unencrypted in OpenSSL's traditional PEM form, which libssh2 reads as
 * before. Otherwise the passphrase stays for the daemon's lifetime and libssh2 decrypts
 * the key at every authentication, leaving copies of both in freed memory. The result is
 * a new heap buffer (a secret). 0, -EACCES (the passphrase does not open it), -ENOMEM.
 */
static int decrypt_pem(const char *key, size_t key_len, const char *passphrase, char **ret,
		       size_t *ret_len)
{
	BIO *in = BIO_new_mem_buf(key, (int)key_len), *out = NULL;
	EVP_PKEY *pkey = NULL;
	BUF_MEM *mem = NULL;
	char *plain;
	int r = -ENOMEM;

	if (!in)
		return -ENOMEM;
	/* OpenSSL's default callback takes `u` as the NUL-terminated passphrase */
	pkey = PEM_read_bio_PrivateKey(in, NULL, NULL, (void *)passphrase);
	if (!pkey) {
		r = -EACCES;
		goto out;
	}
	out = BIO_new(BIO_s_secmem());
	if (!out || !PEM_write_bio_PrivateKey_traditional(out, pkey, NULL, NULL, 0, NULL, NULL))
		goto out;
	BIO_get_mem_ptr(out, &mem);
	plain = mem ? malloc(mem->length + 1) : NULL;
	if (!plain)
		goto out;
	memcpy(plain, mem->data, mem->length);
	plain[mem->length] = '\0';
	*ret = plain;
	*ret_len = mem->length;
	r = 0;
out:
	BIO_free(in);
	BIO_free(out); /* a secure-memory BIO: its buffer is cleared when freed */
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return r;
}

/* What messages call the files of a key, and the key naming its passphrase file. */
struct key_names {
	const char *what, *passphrase_what, *passphrase_key;
};

static const struct key_names tunnel_key_names = {
    .what = "identity file",
    .passphrase_what = "identity passphrase file",
    .passphrase_key = "identity_passphrase_file",
};

static const struct key_names jump_key_names = {
    .what = "proxy_jump identity file",
    .passphrase_what = "proxy_jump identity passphrase file",
    .passphrase_key = "proxy_jump_identity_passphrase_file",
};

/* The files of one key. */
struct key_source {
	const struct key_names *names;
	const char *path, *passphrase_path;
};

/* A key as read: the file's text and the passphrase's first line, both secrets on the heap. */
struct key_text {
	char *key, *passphrase;
	size_t key_len, passphrase_len;
};

static void key_text_finish(struct key_text *k)
{
	free_secret(k->key, k->key_len);
	free_secret(k->passphrase, k->passphrase_len);
}

/* The key is `plain` now, decrypted: the passphrase has done its work. */
static void key_text_decrypted(struct key_text *k, char *plain, size_t plain_len)
{
	free_secret(k->key, k->key_len);
	k->key = plain;
	k->key_len = plain_len;
	free_secret(k->passphrase, k->passphrase_len);
	k->passphrase = NULL;
	k->passphrase_len = 0;
}

static int read_key(const struct key_source *src, struct key_text *k, char *err, size_t err_size)
{
	int r = read_private(src->names->what, src->path, KEY_FILE_MAX, &k->key, &k->key_len, err,
			     err_size);

	if (r < 0 || !src->passphrase_path)
		return r;
	r = read_private(src->names->passphrase_what, src->passphrase_path, PASSPHRASE_FILE_MAX,
			 &k->passphrase, &k->passphrase_len, err, err_size);
	if (r == 0) {
		/* its first line */
		size_t line = strcspn(k->passphrase, "\r\n");

		explicit_bzero(k->passphrase + line, k->passphrase_len - line);
		k->passphrase_len = line;
	}
	return r;
}

/*
 * An OpenSSH key, or a PEM key with a passphrase that says it is encrypted: decrypted once,
 * here. Any other key goes to libssh2 as it is.
 */
static int decrypt_key(const struct key_source *src, struct key_text *k, char *err, size_t err_size)
{
	const struct key_names *n = src->names;
	char *plain;
	size_t plain_len;
	int r;

	if (strstr(k->key, OPENSSH_BEGIN)) {
		/* the bcrypt KDF runs once here, never per reconnect */
		r = sshkey_decrypt_openssh(k->key, k->key_len, k->passphrase, k->passphrase_len,
					   &plain, &plain_len);
		if (r == -EACCES && k->passphrase_len == 0 && k->passphrase)
			snprintf(err, err_size,
				 "%s %s: encrypted, and the passphrase file is empty", n->what,
				 src->path);
		else if (r == -EACCES && k->passphrase_len == 0)
			snprintf(err, err_size, "%s %s: encrypted, and no %s is set", n->what,
				 src->path, n->passphrase_key);
		else if (r < 0)
			snprintf(err, err_size, "%s %s: %s", n->what, src->path,
				 identity_decrypt_error(r));
	} else if (k->passphrase && strstr(k->key, "ENCRYPTED")) {
		r = decrypt_pem(k->key, k->key_len, k->passphrase, &plain, &plain_len);
		if (r == -EACCES)
			snprintf(err, err_size, "%s %s: %s", n->what, src->path,
				 identity_decrypt_error(r));
		else if (r == -ENOMEM)
			snprintf(err, err_size, "out of memory");
	} else {
		return 0;
	}
	if (r < 0)
		return r;
	key_text_decrypted(k, plain, plain_len);
	return 0;
}

/* Moves the key (and a PEM key's passphrase) into id, where core dumps skip them, and reads
 * its public half. 0 or -ENOMEM. */
static int identity_take(struct identity *id, struct key_text *k)
{
	int r = to_secret_pages(&k->key, k->key_len);

	if (r < 0)
		return r;
	id->private_key = k->key;
	id->private_len = k->key_len;
	k->key = NULL;
	if (k->passphrase) {
		r = to_secret_pages(&k->passphrase, k->passphrase_len);
		if (r < 0)
			return r;
		id->passphrase = k->passphrase;
		id->passphrase_len = k->passphrase_len;
		k->passphrase = NULL;
	}
	return identity_read_public(id) == -ENOMEM ? -ENOMEM : 0;
}

static int load_key(const struct key_source *src, struct identity *ret, char *err, size_t err_size)
{
	struct identity id = {0};
	struct key_text k = {0};
	int r;

	if (!src->path) {
		*ret = id;
		return 0;
	}
	r = read_key(src, &k, err, err_size);
	if (r == 0)
		r = decrypt_key(src, &k, err, err_size);
	if (r == 0) {
		r = identity_take(&id, &k);
		if (r < 0)
			snprintf(err, err_size, "out of memory");
	}
	if (r < 0) {
		identity_finish(&id);
		key_text_finish(&k);
		return r;
	}
	*ret = id;
	return 0;
}

int identity_load(const struct tunnel_config *cfg, struct identity *ret, char *err, size_t err_size)
{
	const struct key_source src = {&tunnel_key_names, cfg->identity_file,
				       cfg->identity_passphrase_file};

	return load_key(&src, ret, err, err_size);
}

int identity_load_jump(const struct tunnel_config *cfg, struct identity *ret, char *err,
		       size_t err_size)
{
	const struct key_source src = {&jump_key_names, cfg->jump_identity_file,
				       cfg->jump_identity_passphrase_file};

	return load_key(&src, ret, err, err_size);
}

void identity_finish(struct identity *id)
{
	secret_pages_free(id->private_key, id->private_len + 1);
	free(id->public_key);
	secret_pages_free(id->passphrase, id->passphrase_len + 1);
	memset(id, 0, sizeof(*id));
}
