#include "hostkey.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "privfile.h"
#include "util.h"

/* Read at every connection: a file this size is far beyond any real one. */
#define KNOWN_HOSTS_MAX (4 * 1024 * 1024)

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

/*
 * Reads the file ourselves (privfile_open: no symbolic link, owner root or us, not writable
 * by group or others) and hands libssh2 one line at a time: libssh2_knownhost_readfile()
 * would open it again by path. A missing file is an empty one when `missing_ok`.
 */
static LIBSSH2_KNOWNHOSTS *load(LIBSSH2_SESSION *session, const char *file, bool missing_ok,
				char *err, size_t err_size)
{
	LIBSSH2_KNOWNHOSTS *hosts = libssh2_knownhost_init(session);
	struct privfile_result res;
	char *text = NULL, why[200];
	size_t len = 0, line_no = 0;
	int fd, r;

	if (!hosts) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	fd = privfile_open(file, O_RDONLY, PRIVFILE_MODE_TRUSTED, &res);
	if (fd < 0) {
		if (missing_ok && res.problem == PRIVFILE_ERRNO && res.error == ENOENT)
			return hosts;
		privfile_describe(&res, why, sizeof(why));
		snprintf(err, err_size, "known_hosts file %s: %s", file, why);
		libssh2_knownhost_free(hosts);
		return NULL;
	}
	r = privfile_read(fd, KNOWN_HOSTS_MAX, &text, &len);
	close(fd);
	if (r < 0) {
		snprintf(err, err_size, "known_hosts file %s: %s", file, strerror(-r));
		libssh2_knownhost_free(hosts);
		return NULL;
	}
	for (const char *line = text; line < text + len;) {
		const char *nl = memchr(line, '\n', (size_t)(text + len - line));
		size_t n = nl ? (size_t)(nl - line) + 1 : (size_t)(text + len - line);

		line_no++;
		if (libssh2_knownhost_readline(hosts, line, n, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
			snprintf(err, err_size, "known_hosts file %s: cannot parse line %zu", file,
				 line_no);
			libssh2_knownhost_free(hosts);
			free(text);
			return NULL;
		}
		line += n;
	}
	free(text);
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
	hosts = load(session, known_hosts_file, true, err, sizeof(err));
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

/* Whether the one known_hosts line `line` names one of the destinations, for any key
 * type; a line libssh2 cannot parse counts as naming them all. */
static bool line_is_relevant(LIBSSH2_SESSION *session, const char *line, size_t len,
			     const struct hostkey_dest *dests, size_t n)
{
	LIBSSH2_KNOWNHOSTS *hosts = libssh2_knownhost_init(session);
	bool relevant = false;

	if (!hosts || libssh2_knownhost_readline(hosts, line, len,
						 LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
		relevant = true;
		goto out;
	}
	for (size_t d = 0; d < n && !relevant; d++)
		for (size_t i = 0; i < sizeof(key_types) / sizeof(key_types[0]); i++) {
			/* a one-byte probe key never matches: MISMATCH means "names this host" */
			int mask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
				   key_types[i].knownhost_key;
			int r = libssh2_knownhost_checkp(hosts, dests[d].host, dests[d].port, "x", 1,
							 mask, NULL);

			if (r == LIBSSH2_KNOWNHOST_CHECK_MISMATCH ||
			    r == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
				relevant = true;
				break;
			}
		}
out:
	if (hosts)
		libssh2_knownhost_free(hosts);
	return relevant;
}

int hostkey_relevant_digest(int fd, const struct hostkey_dest *dests, size_t n,
			    struct file_digest *ret)
{
	struct file_digest digest = {.size = 0, .hash = FILE_DIGEST_HASH_INIT};
	LIBSSH2_SESSION *session;
	char *text = NULL;
	size_t len = 0;
	int r;

	r = privfile_read(fd, KNOWN_HOSTS_MAX, &text, &len);
	if (r < 0)
		return r;
	/* only for libssh2_knownhost_init(): it never connects */
	session = libssh2_session_init();
	if (!session) {
		free(text);
		return -ENOMEM;
	}
	for (const char *line = text; line < text + len;) {
		const char *nl = memchr(line, '\n', (size_t)(text + len - line));
		size_t n_line = nl ? (size_t)(nl - line) + 1 : (size_t)(text + len - line);
		size_t skip = 0;

		while (skip < n_line && (line[skip] == ' ' || line[skip] == '\t'))
			skip++;
		if (skip < n_line && line[skip] != '#' && line[skip] != '\n' &&
		    line_is_relevant(session, line, n_line, dests, n)) {
			digest.hash = file_digest_hash(digest.hash, line, n_line);
			digest.size += n_line;
		}
		line += n_line;
	}
	libssh2_session_free(session);
	free(text);
	*ret = digest;
	return 0;
}

enum hostkey_verdict hostkey_check(LIBSSH2_SESSION *session, const char *known_hosts_file,
				   bool missing_ok, const char *host, uint16_t port, char *err,
				   size_t err_size)
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
	hosts = load(session, known_hosts_file, missing_ok, err, err_size);
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

/* fsync() of the directory holding `path`, so that a file just created there survives a crash. */
static int sync_directory_of(const char *path)
{
	char *copy = strdup(path);
	int fd, r = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/*
 * Appends `line` to the file, creating it (0600, O_EXCL) when it does not exist; neither
 * follows a symbolic link, and an existing file must pass the rule load() reads it under.
 * The line is on disk (fsync of the file, and of its directory when created) on success:
 * a host key learned once must not be learned anew after a crash.
 */
static int append_line(const char *file, const char *line, size_t len, char *err,
		       size_t err_size)
{
	struct privfile_result res;
	bool created = false;
	char why[200];
	int fd = -1, r = 0;

	/* twice: someone else may create the file between our two opens */
	for (int attempt = 0; attempt < 2 && fd < 0; attempt++) {
		fd = privfile_open(file, O_WRONLY | O_APPEND, PRIVFILE_MODE_TRUSTED, &res);
		if (fd >= 0 || res.problem != PRIVFILE_ERRNO || res.error != ENOENT)
			break;
		fd = privfile_open(file, O_WRONLY | O_APPEND | O_CREAT | O_EXCL,
				   PRIVFILE_MODE_TRUSTED, &res);
		created = fd >= 0;
		if (fd < 0 && (res.problem != PRIVFILE_ERRNO || res.error != EEXIST))
			break;
	}
	if (fd < 0) {
		privfile_describe(&res, why, sizeof(why));
		snprintf(err, err_size, "%s", why);
		return res.problem == PRIVFILE_ERRNO ? -res.error : -EPERM;
	}
	if (write_all(fd, line, len) < 0 || fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && created)
		r = sync_directory_of(file);
	if (r < 0)
		snprintf(err, err_size, "%s", strerror(-r));
	return r;
}

int hostkey_append(LIBSSH2_SESSION *session, const char *known_hosts_file, const char *host,
		   uint16_t port, char *err, size_t err_size)
{
	LIBSSH2_KNOWNHOSTS *hosts = libssh2_knownhost_init(session);
	struct libssh2_knownhost *entry;
	const struct key_type *kt;
	char pattern[300], line[4096];
	const char *key;
	size_t len, out_len;
	int type;

	key = libssh2_session_hostkey(session, &len, &type);
	kt = key ? key_type_of(type) : NULL;
	if (!hosts || !kt) {
		libssh2_knownhost_free(hosts);
		snprintf(err, err_size, "server host key of unsupported type");
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
		snprintf(err, err_size, "cannot format the host key");
		return -EINVAL;
	}
	libssh2_knownhost_free(hosts);
	return append_line(known_hosts_file, line, out_len, err, err_size);
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
