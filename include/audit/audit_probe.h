#pragma once
#include <libssh2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "config.h"

/*
 * The audit's probes over an authenticated session, as one resumable plan: `moletun audit`
 * runs it once on a blocking session of its own (libssh2's timeout bounds each step), the
 * daemon pumps it on a tunnel's live, non-blocking session (each call goes as far as the
 * input allows and returns LIBSSH2_ERROR_EAGAIN; the same arguments resume it). Every
 * probe is harmless: a channel that opens is closed at once without a byte sent to its
 * destination, a granted listen is cancelled at once, and the one command asked for only
 * echoes a marker. The findings go to an audit_report as each probe ends.
 */

/* How the probes reach the session. NULL members: libssh2 itself (a session of the audit's
 * own); a live session shares its one open in flight and its global replies (tunnel.h). */
struct audit_session_ops {
	void *userdata;
	/* as libssh2_channel_open_ex(): 0 with *ret, EAGAIN, or the error */
	int (*open)(void *userdata, LIBSSH2_CHANNEL **ret, const char *type, unsigned type_len,
		    unsigned window, unsigned packet, const char *msg, unsigned msg_len);
	/* a global request with want-reply may go now; true reserves the replies */
	bool (*global_begin)(void *userdata);
	void (*global_end)(void *userdata);
};

enum audit_probe_kind {
	AUDIT_PROBE_SESSION,	   /* a session channel, and `echo MARKER` on it */
	AUDIT_PROBE_PTY,	   /* a pty request on a new session channel */
	AUDIT_PROBE_SFTP,	   /* the sftp subsystem (blocking sessions only) */
	AUDIT_PROBE_NON_TARGET,	   /* direct-tcpip to a destination no tunnel needs */
	AUDIT_PROBE_TARGETS,	   /* direct-tcpip to each of the tunnel's own targets */
	AUDIT_PROBE_STREAMLOCAL,   /* direct-streamlocal@openssh.com to a Unix socket */
	AUDIT_PROBE_TCPIP_FORWARD, /* tcpip-forward for a listen the tunnel does not ask */
	AUDIT_PROBE_NOTE_STREAMLOCAL_FORWARD, /* not probed: says why */
};

/* Which probes a plan holds. */
enum audit_scope {
	/* everything `moletun audit` checks after login */
	AUDIT_SCOPE_FULL,
	/* what the daemon checks on a live session: no sftp (libssh2 opens its channel outside
	 * the session's shared open), no targets (the target probes do that every
	 * probe_interval), no note */
	AUDIT_SCOPE_LIVE,
};

#define AUDIT_SOCKETS_MAX 8
#define AUDIT_PROBES_MAX  (10 + AUDIT_SOCKETS_MAX)
#define AUDIT_OUTPUT_MAX  4096

struct audit_probe {
	enum audit_probe_kind kind;
	const char *host; /* direct-tcpip and tcpip-forward (points into the plan's source) */
	uint16_t port;
	const char *path; /* streamlocal */
};

struct audit_plan {
	const struct tunnel_config *t;
	struct audit_probe probes[AUDIT_PROBES_MAX];
	size_t n;
	size_t n_remote_forwards;
	double read_for; /* seconds a command's output is read at most */
	/* progress */
	size_t next;
	size_t target; /* AUDIT_PROBE_TARGETS: the forward probed next */
	int phase;
	bool stopping; /* audit_plan_stop(): finish what is in flight, then nothing more */
	LIBSSH2_CHANNEL *ch;
	LIBSSH2_LISTENER *listener;
	bool global_held;
	double read_until; /* clock_now(): the command's output is read until then */
	double free_until; /* the server's close of a channel is awaited until then */
	/* what was seen so far */
	struct audit_session session;
	char command[64], expect[48], out[AUDIT_OUTPUT_MAX + 1];
	size_t out_len, out_total;
	int stream;
	enum audit_open answers[AUDIT_PROBES_MAX];
	size_t n_answers;
	enum audit_pty pty;
	enum audit_open answer; /* how the open under way was answered */
	int bound;		/* the granted listen's port, -1 when refused */
};

/*
 * Plans the probes for tunnel `t` (which must outlive the plan, as must `sockets`: Unix
 * sockets to probe besides the usual ones). `read_for`: how long a command's output is
 * read at most, seconds.
 */
void audit_plan_init(struct audit_plan *p, const struct tunnel_config *t, enum audit_scope scope,
		     const char *const *sockets, size_t n_sockets, double read_for);
/*
 * Runs the plan on `s` as far as it goes, adding findings to `r`. 0 when every probe is
 * done (or, after audit_plan_stop(), what was in flight is), LIBSSH2_ERROR_EAGAIN to call
 * again with the same arguments when the session has input, or the libssh2 error code
 * that ended the session (the plan stops there).
 */
int audit_plan_run(struct audit_plan *p, LIBSSH2_SESSION *s, const struct audit_session_ops *ops,
		   struct audit_report *r);
/* No probe starts any more; the one in flight is carried to its end and closed. */
void audit_plan_stop(struct audit_plan *p);
/* The session ended: its channels and listeners went with it; the plan is over. */
void audit_plan_forget(struct audit_plan *p);
/* Whether the plan awaits the session (an open, a reply, a channel's data). */
bool audit_plan_busy(const struct audit_plan *p);
/* When (clock_now()) the plan must run again even if the session brings nothing: the end
 * of a command's time; 0 when only input matters. */
double audit_plan_wake(const struct audit_plan *p);
