#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/*
 * The control socket protocol (a Unix stream socket, one request per connection):
 *
 *   request = command *(SP argument) [CR] LF      at most CONTROL_REQUEST_MAX bytes with LF
 *   reply   = header LF body, then the server closes the connection
 *   header  = "ok" *(SP key "=" value)            keys a client does not know are ignored
 *           / "error" SP message                  message is one line of printable text
 *
 * Requests (arguments separated by spaces or tabs, options anywhere):
 *   status [--json] [NAME]   header "ok tunnels=N up=M"; body: JSON (status_format_json)
 *                            with --json, the human table otherwise
 *   metrics                  body: Prometheus text exposition 0.0.4
 *   reconnect NAME|--all     empty body                                      (mutating)
 *   reload                   empty body; on "error invalid configuration"    (mutating)
 *                            the body lists every configuration error, one per line
 *   alert-test [NAME]        sends a test event to every alert target, or NAME (mutating)
 *                            header "ok alerts=N failed=M" once all attempts ended (up to
 *                            ALERT_TEST_TIMEOUT_MS); body: one "NAME: RESULT" line each,
 *                            e.g. "ops: HTTP 200", "pager: failed: HTTP 500"
 *
 * "error busy" means the server closed the connection without reading the request (no
 * free slot, see control_server_create()): nothing was done, and asking again is safe.
 *
 * A client may also end its request with EOF instead of LF. Mutating requests need
 * uid 0, the daemon's uid, or membership of the control group; anything else may be
 * asked by whoever can connect. The body is UTF-8 text and ends at EOF.
 */

#define CONTROL_REQUEST_MAX 1024      /* bytes, LF included */
#define CONTROL_NAME_MAX    128	      /* tunnel name bytes, NUL included */
#define CONTROL_REPLY_MAX   (8 << 20) /* a bigger reply is refused, not truncated */

enum control_command {
	CONTROL_STATUS,
	CONTROL_METRICS,
	CONTROL_RECONNECT,
	CONTROL_RELOAD,
	CONTROL_ALERT_TEST,
};

struct control_request {
	enum control_command command;
	bool json;		     /* status --json */
	bool all;		     /* reconnect --all */
	char name[CONTROL_NAME_MAX]; /* "" when no NAME was given */
};

/*
 * Looks for the end of a request in the first `len` bytes received. Returns the length of
 * the request line without its LF, -EAGAIN when more bytes are needed, or -EMSGSIZE when
 * no LF can arrive within CONTROL_REQUEST_MAX.
 */
ssize_t control_request_scan(const char *buf, size_t len);

/*
 * Parses one request line (`len` bytes, no LF; a trailing CR is ignored). Returns 0, or
 * -EINVAL with *ret_error set to the text of the error reply, e.g. "unknown command" or
 * "usage: reconnect NAME|--all". *ret is untouched on failure.
 */
int control_request_parse(const char *line, size_t len, struct control_request *ret,
			  const char **ret_error);

/* The canonical request line for r, with its LF. Returns -ENOBUFS when it does not fit. */
int control_request_format(const struct control_request *r, char *buf, size_t size);

/* True for requests that change the daemon's state (reconnect, reload). */
bool control_command_mutates(enum control_command c);

const char *control_command_str(enum control_command c);

/* One usage line per command, from the table the parser dispatches on (for help). */
void control_commands_print(FILE *out);

struct control_reply_header {
	bool ok;
	char message[CONTROL_REQUEST_MAX]; /* the error message ("" when ok) */
	long tunnels;			   /* "tunnels=" of a status reply; -1 when absent */
	long up;			   /* "up=" of a status reply; -1 when absent */
	long healthy;			   /* "healthy=": up with health ok; -1 when absent */
	long alerts;			   /* "alerts=" of an alert-test reply; -1 when absent */
	long failed;			   /* "failed=" of an alert-test reply; -1 when absent */
};

/*
 * Parses the header line (`len` bytes, no LF). Returns 0 or -EBADMSG when it is neither
 * "ok..." nor "error ..."; *ret is untouched on failure.
 */
int control_reply_header_parse(const char *line, size_t len, struct control_reply_header *ret);
