#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/*
 * The authorized_keys lines that confine a node's key to its tunnels (`moletun authorize`):
 * OpenSSH's key options (sshd(8), AUTHORIZED_KEYS FILE FORMAT) that hold even in a stock
 * sshd_config — `restrict` (no pty, agent, X11, user rc, nor forwarding), `port-forwarding`
 * only with `permitopen` naming the targets and `permitlisten` the remote listens, and a
 * forced command so that no session runs anything else. A tunnel through proxy_jump needs a
 * line on every bastion too, permitting the way to the next hop only. Pure: the caller
 * reads keys and configuration and prints.
 */

/* What every session of a confined key runs instead of what was asked. */
#define AUTHORIZE_COMMAND "/usr/sbin/nologin"

/*
 * permitopen when a line must allow forwarding (remote forwards) but no local one: sshd
 * compares the requested host with this text exactly and would then have to resolve it, and
 * RFC 6761 reserves .invalid so that it never resolves.
 */
#define AUTHORIZE_NO_OPEN "none.invalid:1"
/*
 * permitlisten when a line allows local forwards but no remote one (key options have no
 * "none" for it; leaving it out allows every listen). OpenSSH lowercases the requested
 * listen host and matches it against this pattern case-sensitively, so upper-case letters
 * match no request; were that ever to change, the request would still be for port 1 of an
 * address that does not resolve.
 */
#define AUTHORIZE_NO_LISTEN "NONE.INVALID:1"

struct authorize_dest {
	char *host; /* as sent by moletun; IPv6 without brackets */
	uint16_t port;
};

/* One line: one key on one server (host, port, user) and what it may do there. */
struct authorize_line {
	char *server_host;
	uint16_t server_port;
	char *server_user;
	char *public_key;	      /* "ssh-ed25519 AAAA..." */
	char *roles;		      /* "sidecar of db, bastion of replica" */
	char *tunnels;		      /* "db,replica": the comment names them */
	struct authorize_dest *opens; /* permitopen, first use first, no duplicates */
	size_t n_opens;
	struct authorize_dest *listens; /* permitlisten */
	size_t n_listens;
	bool first_hop; /* every tunnel using it reaches the server from the node itself */
};

struct authorize_set {
	struct authorize_line *lines;
	size_t n;
};

/*
 * Adds the lines `t` needs: on its server, permitopen for its local forwards' targets and
 * permitlisten for its remote forwards' listens; on each proxy_jump bastion, permitopen for
 * the next hop. `key` is the tunnel's public key ("TYPE BASE64"); `jump_key` the bastions'
 * (proxy_jump_identity_file), NULL when they use `key`. A line for the same key on the
 * same server (host, port and user) is merged: sshd uses only the first line matching a
 * key. 0 or -ENOMEM.
 */
int authorize_set_add_tunnel(struct authorize_set *set, const struct tunnel_config *t,
			     const char *key, const char *jump_key);

/*
 * Formats a line (no newline) in *ret, a new string: options, key, and the comment
 * "moletun@NODE:TUNNELS". `from` (NULL: none) is an OpenSSH pattern-list put in from= on
 * lines whose server the node reaches directly. 0, or -EINVAL with the reason in err (a
 * value that cannot be written between double quotes), or -ENOMEM.
 */
int authorize_format(const struct authorize_line *line, const char *from, const char *node,
		     char **ret, char *err, size_t err_size);

/* "# USER@HOST:PORT: sidecar of db" and, when from= was asked for but left out, why. */
void authorize_format_label(const struct authorize_line *line, bool from_given, char *buf,
			    size_t size);

/*
 * Checks a --from value: comma-separated addresses, host names, CIDR blocks or patterns
 * (*, ?), each optionally negated with '!'. 0 or -EINVAL with the reason in err.
 */
int authorize_check_from(const char *from, char *err, size_t err_size);

/*
 * Writes `value` as a double-quoted key-option value (sshd's opt_dequote(): only \" is an
 * escape) into buf. 0, -EINVAL (a control character, or a trailing backslash, which would
 * escape the closing quote), or -ENOSPC.
 */
int authorize_quote(const char *value, char *buf, size_t size);

void authorize_set_free(struct authorize_set *set);
