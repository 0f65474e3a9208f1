#pragma once
#include <stdbool.h>
#include <stddef.h>

/*
 * `moletun authorize` and `moletun audit`: the commands about the sidecar's side of a
 * tunnel. Each parses its arguments first (main.c may then take on the service's user, as
 * check does), then runs. A parse returns 0, or the exit status of a usage error (2) after
 * printing it; `--help` returns -1 after printing the help.
 */

/* Most tunnel names one command line may select. */
#define COMMAND_TUNNELS_MAX 64

struct tunnel_selection {
	const char *config_path;
	const char *names[COMMAND_TUNNELS_MAX]; /* none: every tunnel */
	size_t n_names;
};

struct config;
struct tunnel_config;
struct option;

/* What a command's parse tells tunnel_selection_parse(). */
struct command_line {
	const char *cmd;	       /* "audit": "moletun audit: ..." */
	const char *help;	       /* printed for --help, and after a usage error */
	const struct option *longopts; /* config and help among them */
	/* Any other option of longopts, with its argument; 0, or the exit status to return
	 * (command_usage_error()'s, say). */
	int (*option)(const struct command_line *cl, int opt, char *arg);
	void *userdata; /* the command's arguments */
};

/*
 * Parses `moletun CMD [-c FILE] [OPTION...] [TUNNEL...]`: -c FILE (CONFIG_DEFAULT_PATH when
 * not given) and the tunnel names into sel, the command's own options to cl->option.
 * 0, -1 after printing the help for --help, or the exit status of a usage error.
 */
int tunnel_selection_parse(int argc, char **argv, const struct command_line *cl,
			   struct tunnel_selection *sel);
/* Prints "moletun CMD: WHAT 'ARG'" and the command's help to stderr. Returns 2. */
int command_usage_error(const struct command_line *cl, const char *what, const char *arg);

/*
 * Loads sel->config_path and picks the named tunnels (all when none is named), in the
 * order named. Prints every problem to stderr, prefixed with "moletun CMD: " where it is
 * not a FILE:LINE diagnostic. 0, or 2 (the exit status of a configuration error).
 */
int tunnel_selection_load(const struct tunnel_selection *sel, const char *cmd, struct config **ret,
			  const struct tunnel_config ***ret_tunnels, size_t *ret_n);

struct authorize_args {
	struct tunnel_selection sel;
	char *from; /* --from values joined with commas; NULL when none */
};

extern const char authorize_help[];
int authorize_parse_args(int argc, char **argv, struct authorize_args *ret);
/* Prints the lines; 0, 1 when a tunnel's key could not be read, 2 on configuration errors. */
int authorize_run(struct authorize_args *args);

struct audit_args {
	struct tunnel_selection sel;
	bool json;
	/* extra Unix socket paths to probe with direct-streamlocal (--socket) */
	const char *sockets[8]; /* at most AUDIT_SOCKETS_MAX */
	size_t n_sockets;
};

extern const char audit_help[];
int audit_parse_args(int argc, char **argv, struct audit_args *ret);
/* 0 when nothing fails, 1 when a check fails, 2 on configuration errors, 3 when a tunnel's
 * sidecar cannot be reached or authenticated to. */
int audit_run(const struct audit_args *args);
