#include "identity.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sshkey.h"
#include "util.h"

#define KEY_FILE_MAX (64 * 1024)
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
static int public_from_openssh(struct identity *id)
{
	const char *begin = strstr(id->private_key, OPENSSH_BEGIN);
	const char *end = begin ? strstr(begin, OPENSSH_END) : NULL;
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
	id->public_len = type_len + 1 + (blob_len + 2) / 3 * 4;
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
	free(raw);
	return rc;
}

int identity_load(const struct tunnel_config *cfg, struct identity *ret, char *err,
		  size_t err_size)
{
	struct identity id = {0};
	int r;

	if (!cfg->identity_file) {
		*ret = id;
		return 0;
	}
	r = read_file(cfg->identity_file, KEY_FILE_MAX, &id.private_key, &id.private_len);
	if (r < 0) {
		snprintf(err, err_size, "identity file %s: %s", cfg->identity_file, strerror(-r));
		return r;
	}
	r = public_from_openssh(&id);
	if (r == -ENOMEM) {
		identity_finish(&id);
		snprintf(err, err_size, "out of memory");
		return r;
	}
	if (cfg->identity_passphrase_file) {
		r = read_file(cfg->identity_passphrase_file, 4096, &id.passphrase,
			      &id.passphrase_len);
		if (r < 0) {
			snprintf(err, err_size, "identity passphrase file %s: %s",
				 cfg->identity_passphrase_file, strerror(-r));
			identity_finish(&id);
			return r;
		}
		while (id.passphrase_len > 0 && (id.passphrase[id.passphrase_len - 1] == '\n' ||
						 id.passphrase[id.passphrase_len - 1] == '\r'))
			id.passphrase[--id.passphrase_len] = '\0';
	}
	if (strstr(id.private_key, OPENSSH_BEGIN)) {
		char *plain;
		size_t plain_len;

		/* the bcrypt KDF runs once here, never per reconnect */
		r = sshkey_decrypt_openssh(id.private_key, id.private_len, id.passphrase,
					   id.passphrase_len, &plain, &plain_len);
		if (r < 0) {
			snprintf(err, err_size, "identity file %s: %s", cfg->identity_file,
				 r == -EACCES ? "wrong or missing passphrase" : strerror(-r));
			identity_finish(&id);
			return r;
		}
		free_secret(id.private_key, id.private_len);
		id.private_key = plain;
		id.private_len = plain_len;
		free_secret(id.passphrase, id.passphrase_len);
		id.passphrase = NULL;
		id.passphrase_len = 0;
	}
	*ret = id;
	return 0;
}

void identity_finish(struct identity *id)
{
	free_secret(id->private_key, id->private_len);
	free(id->public_key);
	free_secret(id->passphrase, id->passphrase_len);
	memset(id, 0, sizeof(*id));
}
