#include "audit_probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libssh2_sftp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* What a forced command printed that the audit keeps (a shell's answer is far shorter). */
#define OUTPUT_MAX 4096
/* A forced command that keeps printing is not read to its end. */
#define OUTPUT_READ_MAX (256 * 1024)

/* The probe's channels get a small window: nothing is read through them but a line. */
#define PROBE_WINDOW (64 * 1024)

/* A failure that is an answer (refused), or one that ended the session. */
static bool refused(LIBSSH2_SESSION *s, int *ret_fatal)
{
	int rc = libssh2_session_last_errno(s);

	*ret_fatal = 0;
	if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE || rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED ||
	    rc == LIBSSH2_ERROR_REQUEST_DENIED)
		return true;
	*ret_fatal = rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
	return false;
}

static enum audit_open open_reason(LIBSSH2_SESSION *s)
{
	char *msg = NULL;

	libssh2_session_last_error(s, &msg, NULL, 0);
	return audit_open_from_message(msg);
}

/* Two random numbers for the marker: the output "moletun-audit-AB" appears only where a
 * shell removed the empty quotes of "moletun-audit-A""B"; a forced command that echoes
 * the command it was asked for (SSH_ORIGINAL_COMMAND) prints the quotes too. */
static void marker(char *command, size_t command_size, char *expect, size_t expect_size)
{
	unsigned short r[2] = {0, 0};

	if (getrandom(r, sizeof(r), GRND_NONBLOCK) != sizeof(r)) {
		r[0] = (unsigned short)getpid();
		r[1] = (unsigned short)time(NULL);
	}
	snprintf(command, command_size, "echo moletun-audit-%u\"\"%u", r[0], r[1]);
	snprintf(expect, expect_size, "moletun-audit-%u%u", r[0], r[1]);
}

/* Reads one stream of the channel until EOF, keeping what fits in out. Stops (with
 * *ret_ended false) at the session's timeout for one read, at `deadline`, or past
 * OUTPUT_READ_MAX bytes in all. 0 or a libssh2 error. */
static int drain(LIBSSH2_CHANNEL *ch, int stream, char *out, size_t *len, size_t *total,
		 time_t deadline, bool *ret_ended)
{
	char buf[1024];

	for (;;) {
		ssize_t n;

		if (*total > OUTPUT_READ_MAX || time(NULL) > deadline) {
			*ret_ended = false;
			return 0;
		}
		n = libssh2_channel_read_ex(ch, stream, buf, sizeof(buf));
		if (n == 0)
			return 0;
		if (n == LIBSSH2_ERROR_TIMEOUT) {
			*ret_ended = false;
			return 0;
		}
		if (n < 0)
			return (int)n;
		*total += (size_t)n;
		if (*len < OUTPUT_MAX) {
			size_t take = (size_t)n < OUTPUT_MAX - *len ? (size_t)n : OUTPUT_MAX - *len;

			memcpy(out + *len, buf, take);
			*len += take;
		}
	}
}

/* The first line of the output, printable characters only. */
static void first_line(const char *out, size_t len, char *buf, size_t size)
{
	size_t n = 0;

	for (size_t i = 0; i < len && n + 1 < size; i++) {
		unsigned char c = (unsigned char)out[i];

		if (c == '\n' || c == '\r') {
			if (n > 0)
				break;
			continue;
		}
		buf[n++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	buf[n] = '\0';
}

int audit_probe_session(LIBSSH2_SESSION *s, struct audit_session *ret)
{
	char command[64], expect[48], out[OUTPUT_MAX + 1];
	/* the whole probe gets what one step may take, and a second for time()'s resolution */
	time_t deadline = time(NULL) + libssh2_session_get_timeout(s) / 1000 + 1;
	LIBSSH2_CHANNEL *ch;
	size_t len = 0, total = 0;
	int rc, fatal = 0;

	memset(ret, 0, sizeof(*ret));
	ret->exit_status = -1;
	ch = libssh2_channel_open_ex(s, "session", sizeof("session") - 1, PROBE_WINDOW,
				     LIBSSH2_CHANNEL_PACKET_DEFAULT, NULL, 0);
	if (!ch)
		return refused(s, &fatal) ? 0 : fatal;
	ret->opened = true;
	marker(command, sizeof(command), expect, sizeof(expect));
	rc = libssh2_channel_exec(ch, command);
	if (rc != 0) {
		if (!refused(s, &fatal))
			return fatal;
		libssh2_channel_free(ch);
		return 0;
	}
	ret->exec_accepted = true;
	/* nothing on its standard input: a program that reads it ends now */
	libssh2_channel_send_eof(ch);
	ret->ended = true;
	rc = drain(ch, 0, out, &len, &total, deadline, &ret->ended);
	if (rc == 0 && ret->ended)
		rc = drain(ch, SSH_EXTENDED_DATA_STDERR, out, &len, &total, deadline, &ret->ended);
	if (rc < 0 && rc != LIBSSH2_ERROR_CHANNEL_CLOSED && rc != LIBSSH2_ERROR_CHANNEL_EOF_SENT)
		return rc;
	out[len] = '\0';
	ret->marker_seen = memmem(out, len, expect, strlen(expect)) != NULL;
	first_line(out, len, ret->output, sizeof(ret->output));
	/* the exit status comes before the server closes the channel */
	if (ret->ended && libssh2_channel_wait_closed(ch) == 0)
		ret->exit_status = libssh2_channel_get_exit_status(ch);
	libssh2_channel_free(ch);
	return 0;
}

int audit_probe_pty(LIBSSH2_SESSION *s, bool sessions_open, enum audit_pty *ret)
{
	LIBSSH2_CHANNEL *ch;
	int rc, fatal = 0;

	*ret = AUDIT_PTY_NO_SESSION;
	if (!sessions_open)
		return 0;
	ch = libssh2_channel_open_ex(s, "session", sizeof("session") - 1, PROBE_WINDOW,
				     LIBSSH2_CHANNEL_PACKET_DEFAULT, NULL, 0);
	if (!ch)
		return refused(s, &fatal) ? 0 : fatal;
	rc = libssh2_channel_request_pty(ch, "vt100");
	if (rc == 0)
		*ret = AUDIT_PTY_GRANTED;
	else if (refused(s, &fatal))
		*ret = AUDIT_PTY_REFUSED;
	else
		return fatal;
	libssh2_channel_free(ch);
	return 0;
}

int audit_probe_sftp(LIBSSH2_SESSION *s, bool sessions_open, enum audit_sftp *ret)
{
	LIBSSH2_SFTP *sftp;

	*ret = AUDIT_SFTP_NO_SESSION;
	if (!sessions_open)
		return 0;
	/* INIT, then the server's VERSION: nothing is opened, read or written */
	sftp = libssh2_sftp_init(s);
	*ret = sftp ? AUDIT_SFTP_ANSWERED : AUDIT_SFTP_REFUSED;
	if (sftp)
		libssh2_sftp_shutdown(sftp);
	return 0;
}

/* Opens a channel of `type` with `msg`, closes it at once: what the server answered. */
static int probe_open(LIBSSH2_SESSION *s, const char *type, const unsigned char *msg,
		      size_t msg_len, enum audit_open *ret)
{
	LIBSSH2_CHANNEL *ch = libssh2_channel_open_ex(s, type, (unsigned)strlen(type), PROBE_WINDOW,
						      LIBSSH2_CHANNEL_PACKET_DEFAULT,
						      (const char *)msg, (unsigned)msg_len);
	int fatal = 0;

	if (ch) {
		*ret = AUDIT_OPENED;
		libssh2_channel_free(ch);
		return 0;
	}
	if (!refused(s, &fatal))
		return fatal;
	*ret = open_reason(s);
	return 0;
}

static unsigned char *put_string(unsigned char *p, const char *s, size_t len)
{
	uint32_t n = htonl((uint32_t)len);

	memcpy(p, &n, 4);
	memcpy(p + 4, s, len);
	return p + 4 + len;
}

static unsigned char *put_u32(unsigned char *p, uint32_t v)
{
	uint32_t n = htonl(v);

	memcpy(p, &n, 4);
	return p + 4;
}

/* RFC 4254 7.2: host, port, originator address and port (as the engine's opens). */
int audit_probe_direct_tcpip(LIBSSH2_SESSION *s, const char *host, uint16_t port,
			     enum audit_open *ret)
{
	unsigned char msg[2 * (4 + 255) + 8], *p = msg;
	size_t len = strlen(host);

	if (len > 255)
		return LIBSSH2_ERROR_INVAL;
	p = put_string(p, host, len);
	p = put_u32(p, port);
	p = put_string(p, "127.0.0.1", 9);
	p = put_u32(p, 0);
	return probe_open(s, "direct-tcpip", msg, (size_t)(p - msg), ret);
}

/* OpenSSH's PROTOCOL 2.4: socket path, then a reserved string and uint32. */
int audit_probe_streamlocal(LIBSSH2_SESSION *s, const char *path, enum audit_open *ret)
{
	unsigned char msg[4 + 1024 + 4 + 4], *p = msg;
	size_t len = strlen(path);

	if (len > 1024)
		return LIBSSH2_ERROR_INVAL;
	p = put_string(p, path, len);
	p = put_string(p, "", 0);
	p = put_u32(p, 0);
	return probe_open(s, "direct-streamlocal@openssh.com", msg, (size_t)(p - msg), ret);
}

int audit_probe_tcpip_forward(LIBSSH2_SESSION *s, const char *host, uint16_t port,
			      bool *ret_granted, unsigned *ret_bound_port)
{
	int bound = 0, fatal = 0;
	LIBSSH2_LISTENER *l = libssh2_channel_forward_listen_ex(s, host, port, &bound, 1);

	*ret_granted = l != NULL;
	*ret_bound_port = l ? (unsigned)(bound ? bound : port) : 0;
	if (l) {
		libssh2_channel_forward_cancel(l);
		return 0;
	}
	return refused(s, &fatal) ? 0 : fatal;
}
