#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "config.h"
#include "identity.h"
#include "log.h"

/* The user the packaged unit runs the daemon as (systemd/moletun.service.in, User=). */
#define SERVICE_USER "moletun"

static const char usage_text[] =
	"usage: moletun run [-c FILE]                run the daemon in the foreground\n"
	"       moletun check [-c FILE] [-u USER]    validate a configuration\n"
	"       moletun ctl [-s SOCKET] COMMAND      talk to a running daemon\n"
	"       moletun authorize [TUNNEL...]        print the sidecar's authorized_keys lines\n"
	"       moletun audit [TUNNEL...]            check what the sidecar allows\n"
	"       moletun help [COMMAND|config]        this, or more on one of them\n"
	"       moletun --version                    print the version\n";

static const struct help_entry {
	const char *name;
	const char *text;
} help_entries[] = {
	{"run", "usage: moletun run [-c FILE]\n"
		"Runs the daemon in the foreground (systemd Type=notify style, no forking).\n"
		"  -c FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"},
	{"check", "usage: moletun check [-c FILE] [-u USER]\n"
		  "Parses and validates the configuration. Prints one line per tunnel and exits 0\n"
		  "when valid; prints every error as FILE:LINE: message and exits 1 otherwise.\n"
		  "Files are opened as the daemon will open them: run by root on the service's\n"
		  "configuration (" CONFIG_DEFAULT_PATH "), check runs as the\n"
		  "service's user, " SERVICE_USER ", when that user exists.\n"
		  "  -c FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"
		  "  -u USER   check as USER (root only; -u root: as root)\n"},
	{"authorize", authorize_help},
	{"audit", audit_help},
};

#include "ctl.h"
#include "daemon.h"

static int usage_error(const char *what, const char *arg)
{
	if (what)
		fprintf(stderr, "moletun: %s '%s'\n", what, arg);
	fputs(usage_text, stderr);
	return 2;
}

static int cmd_help(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage_text, stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(help_entries) / sizeof(help_entries[0]); i++) {
		if (strcmp(argv[1], help_entries[i].name) == 0) {
			fputs(help_entries[i].text, stdout);
			return 0;
		}
	}
	if (strcmp(argv[1], "ctl") == 0) {
		ctl_print_usage(stdout);
		return 0;
	}
	/* --man: the roff source doc/mkconfman.py builds moletun.conf(5) from */
	if (strcmp(argv[1], "config") == 0) {
		if (argc > 2 && strcmp(argv[2], "--man") == 0)
			config_print_man_keys(stdout);
		else
			config_print_keys_text(stdout);
		return 0;
	}
	return usage_error("no help for", argv[1]);
}

/* Parses "-c FILE" (and, for check, "-u USER") for run and check; returns 0 or the exit
 * status for a usage error. */
static int parse_config_arg(int argc, char **argv, const char **ret_path, const char **ret_user)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"user", required_argument, NULL, 'u'},
	    {NULL, 0, NULL, 0},
	};
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ret_user ? "+c:u:" : "+c:", longopts, NULL)) != -1) {
		if (opt == 'c')
			*ret_path = optarg;
		else if (opt == 'u' && ret_user)
			*ret_user = optarg;
		else
			return usage_error("bad option", argv[optind - 1]);
	}
	if (optind < argc)
		return usage_error("unexpected argument", argv[optind]);
	return 0;
}

/* An RSA key in OpenSSH's format (key_type read from its public part) or in PEM. */
static bool is_rsa_key(const struct identity *id)
{
	static const char pem_rsa[] = "-----BEGIN RSA PRIVATE KEY-----";

	return strcmp(id->key_type, "ssh-rsa") == 0 ||
	       (id->private_len >= sizeof(pem_rsa) - 1 &&
		memcmp(id->private_key, pem_rsa, sizeof(pem_rsa) - 1) == 0);
}

/*
 * The daemon would fail to start on a key its passphrase does not open: so does check.
 * An RSA key loads but cannot log in to a current sshd: libssh2 1.10 signs with SHA-1
 * ("ssh-rsa"), which OpenSSH >= 8.8 refuses by default. check says so before the daemon
 * finds out at every connect.
 */
static int key_opens(const struct tunnel_config *t, enum tunnel_key which, char *err,
		     size_t err_size)
{
	const char *path = which == TUNNEL_KEY_JUMP ? t->jump_identity_file : t->identity_file;
	struct identity id;
	int r = which == TUNNEL_KEY_JUMP ? identity_load_jump(t, &id, err, err_size)
					 : identity_load(t, &id, err, err_size);

	if (r < 0)
		return r;
	if (id.private_key && is_rsa_key(&id)) {
		snprintf(err, err_size,
			 "%sidentity file %s is an RSA key: libssh2 1.10 signs RSA keys only with "
			 "SHA-1 (ssh-rsa), which OpenSSH >= 8.8 refuses; make an ed25519 key: "
			 "ssh-keygen -t ed25519 -N '' -f %s (and authorize its .pub on the server)",
			 which == TUNNEL_KEY_JUMP ? "proxy_jump " : "", path, path);
		r = -EPROTONOSUPPORT;
	}
	identity_finish(&id);
	return r;
}

/*
 * Becomes `pw` for the rest of the process: its uid and primary group and no supplementary
 * groups, as the unit runs the daemon (User=, Group=; PrivateUsers=yes maps no other
 * group). Returns 0 or -errno.
 */
static int become_user(const struct passwd *pw)
{
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
		return -errno;
	return 0;
}

/*
 * Who check opens the files as. `user` is -u's argument or NULL. Root checking the
 * service's own configuration checks it as the service's user when that user exists: a
 * root-owned 0600 key passes for root and is unreadable for the daemon. Returns 0 (with
 * *ret_pw NULL: as the caller), or the exit status after printing why not.
 */
static int check_user(const char *path, const char *user, struct passwd **ret_pw)
{
	struct passwd *pw;

	*ret_pw = NULL;
	if (!user) {
		if (geteuid() != 0 || strcmp(path, CONFIG_DEFAULT_PATH) != 0)
			return 0;
		pw = getpwnam(SERVICE_USER);
		if (!pw)
			return 0;
	} else {
		errno = 0;
		pw = getpwnam(user);
		if (!pw) {
			fprintf(stderr, "moletun: check -u %s: %s\n", user,
				errno ? strerror(errno) : "no such user");
			return 2;
		}
		if (pw->pw_uid == geteuid())
			return 0;
		if (geteuid() != 0) {
			fprintf(stderr,
				"moletun: check -u %s: only root can check as another user\n",
				user);
			return 2;
		}
	}
	*ret_pw = pw;
	return 0;
}

/* Whether the effective user may write `path`, or create it when it does not exist. */
static int writable_or_creatable(const char *path)
{
	char *copy;
	int r;

	if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == 0)
		return 0;
	if (errno != ENOENT)
		return -errno;
	copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	r = faccessat(AT_FDCWD, dirname(copy), W_OK | X_OK, AT_EACCESS) < 0 ? -errno : 0;
	free(copy);
	return r;
}

/*
 * What the daemon writes, checked for the user check runs as: known_hosts under
 * accept-new (a learned host key is appended) and the metrics textfile's directory (the
 * file is replaced by a rename). Prints each problem; returns how many.
 */
static size_t check_writable(const struct config *c, const char *user)
{
	size_t problems = 0;
	char *copy;
	int r;

	for (size_t i = 0; i < c->n_tunnels; i++) {
		const struct tunnel_config *t = &c->tunnels[i];

		if (t->strict_host_key_checking != HOST_KEY_ACCEPT_NEW)
			continue;
		r = writable_or_creatable(t->known_hosts_file);
		if (r < 0) {
			fprintf(stderr,
				"%s:%u: known_hosts file %s: strict_host_key_checking = accept-new "
				"appends learned host keys to it, and %s cannot: %s\n",
				t->file, t->line, t->known_hosts_file, user, strerror(-r));
			problems++;
		}
	}
	if (c->metrics_textfile) {
		copy = strdup(c->metrics_textfile);
		if (!copy)
			return problems + 1;
		if (faccessat(AT_FDCWD, dirname(copy), W_OK | X_OK, AT_EACCESS) < 0) {
			fprintf(stderr,
				"%s: metrics_textfile %s: %s cannot create files in its directory: "
				"%s\n",
				c->path, c->metrics_textfile, user, strerror(errno));
			problems++;
		}
		free(copy);
	}
	return problems;
}

static int cmd_check(int argc, char **argv)
{
	const char *path = CONFIG_DEFAULT_PATH, *user = NULL;
	struct passwd *pw;
	struct config *c = NULL;
	struct diag diags;
	char who[64];
	int r;

	r = parse_config_arg(argc, argv, &path, &user);
	if (r)
		return r;
	r = check_user(path, user, &pw);
	if (r)
		return r;
	if (pw) {
		snprintf(who, sizeof(who), "user %s", pw->pw_name);
		r = become_user(pw);
		if (r < 0) {
			fprintf(stderr, "moletun: check: cannot become user %s: %s\n", pw->pw_name,
				strerror(-r));
			return 1;
		}
		if (user)
			fprintf(stderr, "moletun: checking as user %s\n", pw->pw_name);
		else
			fprintf(stderr,
				"moletun: checking as user %s, the user the service runs as (-u root: "
				"as root)\n",
				pw->pw_name);
	} else {
		struct passwd *self = getpwuid(geteuid());

		snprintf(who, sizeof(who), "user %s", self ? self->pw_name : "(this uid)");
	}
	diag_init(&diags);
	r = config_load_verified(path, key_opens, &c, &diags);
	for (size_t i = 0; i < diags.count; i++)
		fprintf(stderr, "%s\n", diags.messages[i]);
	diag_finish(&diags);
	if (r < 0)
		return 1;
	if (check_writable(c, who) > 0) {
		config_free(c);
		return 1;
	}
	config_print_summary(c, stdout);
	config_free(c);
	return 0;
}

/*
 * authorize and audit read the configuration and the keys as the daemon does: like check,
 * run by root on the service's configuration they become the service's user. 0 or the
 * exit status.
 */
static int as_service_user(const char *path, const char *cmd)
{
	struct passwd *pw;
	int r = check_user(path, NULL, &pw);

	if (r || !pw)
		return r;
	r = become_user(pw);
	if (r < 0) {
		fprintf(stderr, "moletun %s: cannot become user %s: %s\n", cmd, pw->pw_name,
			strerror(-r));
		return 2;
	}
	fprintf(stderr, "moletun %s: running as user %s, the user the service runs as\n", cmd,
		pw->pw_name);
	return 0;
}

static int cmd_authorize(int argc, char **argv)
{
	struct authorize_args args;
	int r = authorize_parse_args(argc, argv, &args);

	if (r) {
		free(args.from);
		return r < 0 ? 0 : r;
	}
	r = as_service_user(args.sel.config_path, "authorize");
	if (r) {
		free(args.from);
		return r;
	}
	return authorize_run(&args);
}

static int cmd_audit(int argc, char **argv)
{
	struct audit_args args;
	int r = audit_parse_args(argc, argv, &args);

	if (r)
		return r < 0 ? 0 : r;
	r = as_service_user(args.sel.config_path, "audit");
	if (r)
		return r;
	return audit_run(&args);
}

static int cmd_run(int argc, char **argv)
{
	const char *path = CONFIG_DEFAULT_PATH;
	int r = parse_config_arg(argc, argv, &path, NULL);

	if (r)
		return r;
	return daemon_main(path);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage_error(NULL, NULL);
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("moletun %s\n", MOLETUN_VERSION);
		return 0;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return cmd_help(1, argv);
	if (strcmp(argv[1], "help") == 0)
		return cmd_help(argc - 1, argv + 1);
	if (strcmp(argv[1], "check") == 0)
		return cmd_check(argc - 1, argv + 1);
	if (strcmp(argv[1], "run") == 0)
		return cmd_run(argc - 1, argv + 1);
	if (strcmp(argv[1], "ctl") == 0)
		return ctl_main(argc - 1, argv + 1);
	if (strcmp(argv[1], "authorize") == 0)
		return cmd_authorize(argc - 1, argv + 1);
	if (strcmp(argv[1], "audit") == 0)
		return cmd_audit(argc - 1, argv + 1);
	return usage_error("unknown command", argv[1]);
}
