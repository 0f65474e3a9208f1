#include "audit_probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libssh2_sftp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fwdspec.h"

/* A forced command that keeps printing is not read to its end. */
#define OUTPUT_READ_MAX (256 * 1024)

/* The probe's channels get a small window: nothing is read through them but a line. */
#define PROBE_WINDOW (64 * 1024)

/* Unix sockets a database host commonly has, which a sidecar's key must never reach. */
static const char *const default_sockets[] = {
    "/var/run/docker.sock",
    "/var/run/postgresql/.s.PGSQL.5432",
};

/* Destinations no tunnel needs: the sidecar's own sshd and a port nothing listens on. */
static const struct {
	const char *host;
	uint16_t port;
} non_targets[] = {
    {"127.0.0.1", 22},
    {"127.0.0.1", 1},
};

/* The listen the tcpip-forward probe asks for: port 0, any port the server picks. */
#define PROBE_LISTEN_HOST "127.0.0.1"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* Where a probe is; each phase resumes after EAGAIN. */
enum phase {
	PHASE_IDLE, /* between probes */
	PHASE_OPEN,
	PHASE_EXEC,
	PHASE_EOF,
	PHASE_READ,
	PHASE_WAIT_CLOSED,
	PHASE_PTY,
	PHASE_FREE,
	PHASE_LISTEN,
	PHASE_CANCEL,
};

static bool is_target(const struct tunnel_config *t, const char *host, uint16_t port)
{
	for (size_t i = 0; i < t->n_forwards; i++)
		if (t->forwards[i].kind == FORWARD_LOCAL && t->forwards[i].target_port == port &&
		    strcmp(t->forwards[i].target_host, host) == 0)
			return true;
	return false;
}

static void plan_add(struct audit_plan *p, enum audit_probe_kind kind, const char *host,
		     uint16_t port, const char *path)
{
	if (p->n < AUDIT_PROBES_MAX)
		p->probes[p->n++] = (struct audit_probe){kind, host, port, path};
}

void audit_plan_init(struct audit_plan *p, const struct tunnel_config *t, enum audit_scope scope,
		     const char *const *sockets, size_t n_sockets, double read_for)
{
	bool full = scope == AUDIT_SCOPE_FULL;

	memset(p, 0, sizeof(*p));
	p->t = t;
	p->read_for = read_for;
	for (size_t i = 0; i < t->n_forwards; i++)
		p->n_remote_forwards += t->forwards[i].kind == FORWARD_REMOTE;
	plan_add(p, AUDIT_PROBE_SESSION, NULL, 0, NULL);
	plan_add(p, AUDIT_PROBE_PTY, NULL, 0, NULL);
	if (full)
		plan_add(p, AUDIT_PROBE_SFTP, NULL, 0, NULL);
	/* before the sockets: their verdict depends on how these were answered */
	for (size_t i = 0; i < N_ELEMENTS(non_targets); i++)
		if (!is_target(t, non_targets[i].host, non_targets[i].port))
			plan_add(p, AUDIT_PROBE_NON_TARGET, non_targets[i].host,
				 non_targets[i].port, NULL);
	if (full)
		plan_add(p, AUDIT_PROBE_TARGETS, NULL, 0, NULL);
	for (size_t i = 0; i < N_ELEMENTS(default_sockets); i++)
		plan_add(p, AUDIT_PROBE_STREAMLOCAL, NULL, 0, default_sockets[i]);
	for (size_t i = 0; i < n_sockets && i < AUDIT_SOCKETS_MAX; i++)
		plan_add(p, AUDIT_PROBE_STREAMLOCAL, NULL, 0, sockets[i]);
	plan_add(p, AUDIT_PROBE_TCPIP_FORWARD, PROBE_LISTEN_HOST, 0, NULL);
	if (full)
		plan_add(p, AUDIT_PROBE_NOTE_STREAMLOCAL_FORWARD, NULL, 0, NULL);
}

/* A failure that is an answer (refused), not one that ended the session. */
static bool refused(int rc)
{
	return rc == LIBSSH2_ERROR_CHANNEL_FAILURE || rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED ||
	       rc == LIBSSH2_ERROR_REQUEST_DENIED;
}

/* rc, or what stands for it when libssh2 gave no code with its failure. */
static int fatal(int rc)
{
	return rc ? rc : LIBSSH2_ERROR_SOCKET_RECV;
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
static void marker(struct audit_plan *p)
{
	unsigned short r[2] = {0, 0};

	if (getrandom(r, sizeof(r), GRND_NONBLOCK) != sizeof(r)) {
		r[0] = (unsigned short)getpid();
		r[1] = (unsigned short)time(NULL);
	}
	snprintf(p->command, sizeof(p->command), "echo moletun-audit-%u\"\"%u", r[0], r[1]);
	snprintf(p->expect, sizeof(p->expect), "moletun-audit-%u%u", r[0], r[1]);
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

/* The destination of the probe under way (the target of AUDIT_PROBE_TARGETS). */
static void probe_dest(const struct audit_plan *p, const char **ret_host, uint16_t *ret_port)
{
	const struct audit_probe *pr = &p->probes[p->next];

	if (pr->kind == AUDIT_PROBE_TARGETS) {
		*ret_host = p->t->forwards[p->target].target_host;
		*ret_port = p->t->forwards[p->target].target_port;
	} else {
		*ret_host = pr->host;
		*ret_port = pr->port;
	}
}

static void dest_text(const char *host, uint16_t port, char *buf, size_t size)
{
	bool v6 = strchr(host, ':') != NULL;

	snprintf(buf, size, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
}

/*
 * The channel open of the probe under way, with its type-specific data: RFC 4254 7.2 for
 * direct-tcpip (host, port, originator address and port, as the engine's opens), OpenSSH's
 * PROTOCOL 2.4 for direct-streamlocal (socket path, a reserved string and uint32).
 */
static int plan_open(struct audit_plan *p, LIBSSH2_SESSION *s, const struct audit_session_ops *ops)
{
	unsigned char msg[4 + 1024 + 8], *m = msg;
	const struct audit_probe *pr = &p->probes[p->next];
	const char *type = "session", *host;
	uint16_t port;

	if (pr->kind == AUDIT_PROBE_STREAMLOCAL) {
		type = "direct-streamlocal@openssh.com";
		m = put_string(m, pr->path, strnlen(pr->path, 1024));
		m = put_string(m, "", 0);
		m = put_u32(m, 0);
	} else if (pr->kind == AUDIT_PROBE_NON_TARGET || pr->kind == AUDIT_PROBE_TARGETS) {
		type = "direct-tcpip";
		probe_dest(p, &host, &port);
		m = put_string(m, host, strnlen(host, 255));
		m = put_u32(m, port);
		m = put_string(m, "127.0.0.1", 9);
		m = put_u32(m, 0);
	}
	if (ops && ops->open)
		return ops->open(ops->userdata, &p->ch, type, (unsigned)strlen(type), PROBE_WINDOW,
				 LIBSSH2_CHANNEL_PACKET_DEFAULT, (const char *)msg,
				 (unsigned)(m - msg));
	p->ch = libssh2_channel_open_ex(s, type, (unsigned)strlen(type), PROBE_WINDOW,
					LIBSSH2_CHANNEL_PACKET_DEFAULT, (const char *)msg,
					(unsigned)(m - msg));
	return p->ch ? 0 : libssh2_session_last_errno(s);
}

/* The next of the tunnel's own local targets, each once; false when none is left. */
static bool next_target(struct audit_plan *p)
{
	const struct tunnel_config *t = p->t;

	for (; p->target < t->n_forwards; p->target++) {
		const struct forward_spec *f = &t->forwards[p->target];
		bool seen = false;

		if (f->kind != FORWARD_LOCAL)
			continue;
		for (size_t j = 0; j < p->target && !seen; j++)
			seen = t->forwards[j].kind == FORWARD_LOCAL &&
			       t->forwards[j].target_port == f->target_port &&
			       strcmp(t->forwards[j].target_host, f->target_host) == 0;
		if (!seen)
			return true;
	}
	return false;
}

/* Judges the probe under way from what was seen and moves to the next one. */
static void probe_done(struct audit_plan *p, enum audit_open answer, struct audit_report *r)
{
	const struct audit_probe *pr = &p->probes[p->next];
	const char *host;
	uint16_t port;
	char dest[300];

	p->phase = PHASE_IDLE;
	switch (pr->kind) {
	case AUDIT_PROBE_SESSION:
		p->out[p->out_len] = '\0';
		p->session.marker_seen = p->session.exec_accepted &&
					 memmem(p->out, p->out_len, p->expect, strlen(p->expect));
		first_line(p->out, p->out_len, p->session.output, sizeof(p->session.output));
		audit_judge_session(r, &p->session);
		break;
	case AUDIT_PROBE_PTY:
		audit_judge_pty(r, p->pty);
		break;
	case AUDIT_PROBE_NON_TARGET:
		dest_text(pr->host, pr->port, dest, sizeof(dest));
		audit_judge_direct_tcpip(r, dest, answer);
		p->answers[p->n_answers++] = answer;
		break;
	case AUDIT_PROBE_TARGETS:
		probe_dest(p, &host, &port);
		dest_text(host, port, dest, sizeof(dest));
		audit_judge_target(r, dest, answer);
		p->target++;
		return; /* the next target, if any, is the same probe */
	case AUDIT_PROBE_STREAMLOCAL:
		audit_judge_streamlocal(r, pr->path, answer,
					audit_forwarding_of(p->answers, p->n_answers));
		break;
	case AUDIT_PROBE_TCPIP_FORWARD:
		audit_judge_tcpip_forward(r, PROBE_LISTEN_HOST ":0", p->bound >= 0,
					  p->bound > 0 ? (unsigned)p->bound : 0,
					  p->n_remote_forwards);
		break;
	case AUDIT_PROBE_SFTP:
	case AUDIT_PROBE_NOTE_STREAMLOCAL_FORWARD:
		break;
	}
	p->next++;
}

/* The sftp subsystem: INIT, then the server's VERSION; nothing opened, read or written. A
 * session of the audit's own only (libssh2 opens the channel itself). */
static void probe_sftp(struct audit_plan *p, LIBSSH2_SESSION *s, struct audit_report *r)
{
	enum audit_sftp result = AUDIT_SFTP_NO_SESSION;

	if (p->session.opened) {
		LIBSSH2_SFTP *sftp = libssh2_sftp_init(s);

		result = sftp ? AUDIT_SFTP_ANSWERED : AUDIT_SFTP_REFUSED;
		if (sftp)
			libssh2_sftp_shutdown(sftp);
	}
	audit_judge_sftp(r, result);
}

/* Starts the probe at p->next: its first phase, or done at once. */
static void probe_start(struct audit_plan *p, LIBSSH2_SESSION *s,
			const struct audit_session_ops *ops, struct audit_report *r)
{
	const struct audit_probe *pr = &p->probes[p->next];

	switch (pr->kind) {
	case AUDIT_PROBE_SESSION:
		memset(&p->session, 0, sizeof(p->session));
		p->session.exit_status = -1;
		p->out_len = p->out_total = 0;
		break;
	case AUDIT_PROBE_PTY:
		p->pty = AUDIT_PTY_NO_SESSION;
		if (!p->session.opened) {
			probe_done(p, AUDIT_OPEN_OTHER, r);
			return;
		}
		break;
	case AUDIT_PROBE_SFTP:
		probe_sftp(p, s, r);
		p->next++;
		return;
	case AUDIT_PROBE_TARGETS:
		if (!next_target(p)) {
			p->next++;
			return;
		}
		break;
	case AUDIT_PROBE_TCPIP_FORWARD:
		if (ops && ops->global_begin && !ops->global_begin(ops->userdata)) {
			audit_add(r, "tcpip_forward", PROBE_LISTEN_HOST ":0", AUDIT_SKIP,
				  AUDIT_FIX_NONE, NULL,
				  "not probed this time: the session sent global keepalives, "
				  "whose replies libssh2 would take for the answer");
			p->next++;
			return;
		}
		p->global_held = ops && ops->global_begin;
		p->bound = -1;
		p->phase = PHASE_LISTEN;
		return;
	case AUDIT_PROBE_NOTE_STREAMLOCAL_FORWARD:
		audit_note_streamlocal_forward(r);
		p->next++;
		return;
	case AUDIT_PROBE_NON_TARGET:
	case AUDIT_PROBE_STREAMLOCAL:
		break;
	}
	p->phase = PHASE_OPEN;
}

/* The channel was opened: what to do on it, per probe. */
static void probe_opened(struct audit_plan *p)
{
	switch (p->probes[p->next].kind) {
	case AUDIT_PROBE_SESSION:
		p->session.opened = true;
		marker(p);
		p->phase = p->stopping ? PHASE_FREE : PHASE_EXEC;
		break;
	case AUDIT_PROBE_PTY:
		p->phase = p->stopping ? PHASE_FREE : PHASE_PTY;
		break;
	default:
		p->phase = PHASE_FREE;
		break;
	}
}

/* Reads the command's output, stdout then stderr, until EOF, the time given or
 * OUTPUT_READ_MAX. 0 (phase moved on), EAGAIN or a libssh2 error. */
static int read_output(struct audit_plan *p)
{
	char buf[1024];

	for (;;) {
		ssize_t n;

		if (p->out_total > OUTPUT_READ_MAX || p->stopping || clock_now() >= p->read_until) {
			p->session.ended = false;
			p->phase = PHASE_FREE;
			return 0;
		}
		n = libssh2_channel_read_ex(p->ch, p->stream, buf, sizeof(buf));
		if (n == LIBSSH2_ERROR_EAGAIN)
			return LIBSSH2_ERROR_EAGAIN; /* the owner pumps again, at the latest then */
		if (n == LIBSSH2_ERROR_TIMEOUT) {
			p->session.ended = false;
			p->phase = PHASE_FREE;
			return 0;
		}
		if (n == 0 && p->stream == 0) {
			p->stream = SSH_EXTENDED_DATA_STDERR;
			continue;
		}
		if (n == 0 || n == LIBSSH2_ERROR_CHANNEL_CLOSED ||
		    n == LIBSSH2_ERROR_CHANNEL_EOF_SENT) {
			/* the exit status comes before the server closes the channel */
			p->phase = PHASE_WAIT_CLOSED;
			return 0;
		}
		if (n < 0)
			return (int)n;
		p->out_total += (size_t)n;
		if (p->out_len < AUDIT_OUTPUT_MAX) {
			size_t room = AUDIT_OUTPUT_MAX - p->out_len;
			size_t take = (size_t)n < room ? (size_t)n : room;

			memcpy(p->out + p->out_len, buf, take);
			p->out_len += take;
		}
	}
}

/* The session probe's phases on its open channel. 0 (phase moved on), EAGAIN or an error. */
static int step_command(struct audit_plan *p)
{
	int rc;

	switch (p->phase) {
	case PHASE_EXEC:
		rc = libssh2_channel_process_startup(p->ch, "exec", 4, p->command,
						     (unsigned)strlen(p->command));
		if (rc == LIBSSH2_ERROR_EAGAIN || (rc && !refused(rc)))
			return rc;
		p->session.exec_accepted = rc == 0;
		p->phase = rc == 0 ? PHASE_EOF : PHASE_FREE;
		return 0;
	case PHASE_EOF:
		/* nothing on its standard input: a program that reads it ends now */
		rc = libssh2_channel_send_eof(p->ch);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return rc;
		p->session.ended = true;
		p->stream = 0;
		p->read_until = clock_now() + p->read_for;
		p->phase = PHASE_READ;
		return 0;
	case PHASE_READ:
		return read_output(p);
	case PHASE_WAIT_CLOSED:
		rc = libssh2_channel_wait_closed(p->ch);
		if (rc == LIBSSH2_ERROR_EAGAIN && clock_now() < p->read_until && !p->stopping)
			return rc;
		if (rc == 0)
			p->session.exit_status = libssh2_channel_get_exit_status(p->ch);
		p->phase = PHASE_FREE;
		return 0;
	default:
		break;
	}
	return LIBSSH2_ERROR_BAD_USE;
}

/* The tcpip-forward probe: the request, and the cancel of a granted listen. */
static int step_listen(struct audit_plan *p, LIBSSH2_SESSION *s,
		       const struct audit_session_ops *ops, struct audit_report *r)
{
	int rc;

	if (p->phase == PHASE_LISTEN) {
		int bound = 0;

		p->listener = libssh2_channel_forward_listen_ex(s, PROBE_LISTEN_HOST, 0, &bound, 1);
		rc = p->listener ? 0 : libssh2_session_last_errno(s);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return rc;
		if (rc && !refused(rc))
			return fatal(rc);
		p->bound = p->listener ? bound : -1;
		if (p->global_held)
			ops->global_end(ops->userdata);
		p->global_held = false;
		p->phase = PHASE_CANCEL;
	}
	if (p->listener) {
		/* no reply is asked for the cancel */
		rc = libssh2_channel_forward_cancel(p->listener);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return rc;
		p->listener = NULL;
	}
	probe_done(p, AUDIT_OPEN_OTHER, r);
	return 0;
}

/* Advances the probe under way by one phase. 0, EAGAIN or a libssh2 error. */
static int probe_step(struct audit_plan *p, LIBSSH2_SESSION *s, const struct audit_session_ops *ops,
		      struct audit_report *r)
{
	int rc;

	switch (p->phase) {
	case PHASE_OPEN:
		rc = plan_open(p, s, ops);
		if (rc == 0) {
			p->answer = AUDIT_OPENED;
			probe_opened(p);
			return 0;
		}
		if (rc == LIBSSH2_ERROR_EAGAIN || !refused(rc))
			return rc == LIBSSH2_ERROR_EAGAIN ? rc : fatal(rc);
		probe_done(p, open_reason(s), r);
		return 0;
	case PHASE_PTY:
		rc = libssh2_channel_request_pty(p->ch, "vt100");
		if (rc == LIBSSH2_ERROR_EAGAIN || (rc && !refused(rc)))
			return rc;
		p->pty = rc == 0 ? AUDIT_PTY_GRANTED : AUDIT_PTY_REFUSED;
		p->phase = PHASE_FREE;
		return 0;
	case PHASE_FREE:
		if (p->free_until == 0)
			p->free_until = clock_now() + p->read_for;
		rc = libssh2_channel_free(p->ch);
		/* libssh2 waits for the server's close, which sshd sends for a session only once
		 * its command ended: one that does not is left to die with the session */
		if (rc == LIBSSH2_ERROR_EAGAIN && clock_now() < p->free_until && !p->stopping)
			return rc;
		p->free_until = 0;
		p->ch = NULL;
		probe_done(p, p->answer, r);
		return 0;
	case PHASE_LISTEN:
	case PHASE_CANCEL:
		return step_listen(p, s, ops, r);
	default:
		return step_command(p);
	}
}

int audit_plan_run(struct audit_plan *p, LIBSSH2_SESSION *s, const struct audit_session_ops *ops,
		   struct audit_report *r)
{
	for (;;) {
		int rc;

		if (p->phase == PHASE_IDLE) {
			if (p->stopping || p->next >= p->n)
				return 0;
			p->answer = AUDIT_OPEN_OTHER;
			probe_start(p, s, ops, r);
			continue;
		}
		rc = probe_step(p, s, ops, r);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return rc;
		if (rc) {
			if (p->global_held)
				ops->global_end(ops->userdata);
			audit_plan_forget(p);
			return rc;
		}
	}
}

void audit_plan_stop(struct audit_plan *p)
{
	p->stopping = true;
}

void audit_plan_forget(struct audit_plan *p)
{
	p->ch = NULL;
	p->listener = NULL;
	p->global_held = false;
	p->stopping = true;
	p->phase = PHASE_IDLE;
}

bool audit_plan_busy(const struct audit_plan *p)
{
	return p->phase != PHASE_IDLE;
}

double audit_plan_wake(const struct audit_plan *p)
{
	if (p->phase == PHASE_FREE)
		return p->free_until;
	return p->phase == PHASE_READ || p->phase == PHASE_WAIT_CLOSED ? p->read_until : 0;
}
