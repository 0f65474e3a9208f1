#include "hostkey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

struct key_type {
	int hostkey_type;  /* LIBSSH2_HOSTKEY_TYPE_* */
	int knownhost_key; /* LIBSSH2_KNOWNHOST_KEY_* */
	const char *method;
};

/* Preference order when several are known: the same as OpenSSH's default. */
static const struct key_type key_types[] = {
	{LIBSSH2_HOSTKEY_TYPE_ED25519, LIBSSH2_KNOWNHOST_KEY_ED25519, "ssh-ed25519"},
	{LIBSSH2_HOSTKEY_TYPE_ECDSA_256, LIBSSH2_KNOWNHOST_KEY_ECDSA_256, "ecdsa-sha2-nistp256"},
	{LIBSSH2_HOSTKEY_TYPE_ECDSA_384, LIBSSH2_KNOWNHOST_KEY_ECDSA_384, "ecdsa-sha2-nistp384"},
	{LIBSSH2_HOSTKEY_TYPE_ECDSA_521, LIBSSH2_KNOWNHOST_KEY_ECDSA_521, "ecdsa-sha2-nistp521"},
	{LIBSSH2_HOSTKEY_TYPE_RSA, LIBSSH2_KNOWNHOST_KEY_SSHRSA, "ssh-rsa"},
};

static const struct key_type *key_type_of(int hostkey_type)
{
	for (size_t i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++)
		if (key_types[i].hostkey_type == hostkey_type)
			return &key_types[i];
	return NULL;
}

static LIBSSH2_KNOWNHOSTS *load(LIBSSH2_SESSION *session, const char *file, char *err,
				size_t err_size)
{
	LIBSSH2_KNOWNHOSTS *hosts = libssh2_knownhost_init(session);

	if (!hosts) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	if (access(file, R_OK) < 0) {
		snprintf(err, err_size, "known_hosts file %s: %s", file, strerror(errno));
		libssh2_knownhost_free(hosts);
		return NULL;
	}
	if (libssh2_knownhost_readfile(hosts, file, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
		snprintf(err, err_size, "known_hosts file %s: cannot parse", file);
		libssh2_knownhost_free(hosts);
		return NULL;
	}
	return hosts;
}

void hostkey_known_methods(LIBSSH2_SESSION *session, const char *known_hosts_file,
			   const char *host, uint16_t port, char *buf, size_t size)
{
	LIBSSH2_KNOWNHOSTS *hosts;
	char err[256];
	size_t used = 0;

	buf[0] = '\0';
	if (!known_hosts_file)
		return;
	hosts = load(session, known_hosts_file, err, sizeof(err));
	if (!hosts)
		return;
	for (size_t i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++) {
		/* A one-byte probe key never matches: MISMATCH means "known with this type". */
		int mask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
			   key_types[i].knownhost_key;
		int r = libssh2_knownhost_checkp(hosts, host, port, "x", 1, mask, NULL);

		if (r == LIBSSH2_KNOWNHOST_CHECK_MISMATCH || r == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
			int n = snprintf(buf + used, size - used, "%s%s", used ? "," : "",
					 key_types[i].method);
			if (n < 0 || (size_t)n >= size - used)
				break;
			used += (size_t)n;
		}
	}
	libssh2_knownhost_free(hosts);
}

enum hostkey_verdict hostkey_check(LIBSSH2_SESSION *session, const char *known_hosts_file,
				   const char *host, uint16_t port, char *err, size_t err_size)
{
	LIBSSH2_KNOWNHOSTS *hosts;
	const struct key_type *kt;
	const char *key;
	size_t len;
	int type, r;

	key = libssh2_session_hostkey(session, &len, &type);
	kt = key ? key_type_of(type) : NULL;
	if (!kt) {
		snprintf(err, err_size, "server host key of unsupported type");
		return HOSTKEY_ERROR;
	}
	hosts = load(session, known_hosts_file, err, err_size);
	if (!hosts)
		return HOSTKEY_ERROR;
	r = libssh2_knownhost_checkp(hosts, host, port, key, len,
				     LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
					     kt->knownhost_key,
				     NULL);
	libssh2_knownhost_free(hosts);
	switch (r) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		return HOSTKEY_MATCH;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		return HOSTKEY_MISMATCH;
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
		return HOSTKEY_NOT_FOUND;
	default:
		snprintf(err, err_size, "known_hosts check failed");
		return HOSTKEY_ERROR;
	}
}

int hostkey_append(LIBSSH2_SESSION *session, const char *known_hosts_file, const char *host,
		   uint16_t port)
{
	LIBSSH2_KNOWNHOSTS *hosts = libssh2_knownhost_init(session);
	struct libssh2_knownhost *entry;
	const struct key_type *kt;
	char pattern[300], line[4096];
	const char *key;
	size_t len, out_len;
	int type, fd, r = 0;

	key = libssh2_session_hostkey(session, &len, &type);
	kt = key ? key_type_of(type) : NULL;
	if (!hosts || !kt) {
		libssh2_knownhost_free(hosts);
		return -EINVAL;
	}
	/* OpenSSH writes "[host]:port" for any port but 22. */
	if (port == 22)
		snprintf(pattern, sizeof(pattern), "%s", host);
	else
		snprintf(pattern, sizeof(pattern), "[%s]:%u", host, port);
	if (libssh2_knownhost_addc(hosts, pattern, NULL, key, len, NULL, 0,
				   LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
					   kt->knownhost_key,
				   &entry) < 0 ||
	    libssh2_knownhost_writeline(hosts, entry, line, sizeof(line), &out_len,
					LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
		libssh2_knownhost_free(hosts);
		return -EINVAL;
	}
	libssh2_knownhost_free(hosts);
	fd = open(known_hosts_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write_all(fd, line, out_len) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

void hostkey_describe(LIBSSH2_SESSION *session, char *buf, size_t size)
{
	const char *hash = libssh2_hostkey_hash(session, LIBSSH2_HOSTKEY_HASH_SHA256);
	const struct key_type *kt;
	char b64[64];
	size_t len;
	int type;

	kt = libssh2_session_hostkey(session, &len, &type) ? key_type_of(type) : NULL;
	if (!hash) {
		snprintf(buf, size, "%s", kt ? kt->method : "unknown");
		return;
	}
	base64_encode((const unsigned char *)hash, 32, b64, sizeof(b64), false);
	snprintf(buf, size, "%s SHA256:%s", kt ? kt->method : "unknown", b64);
}
