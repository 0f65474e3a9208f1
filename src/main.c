#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_config.h"
#include "config.h"
#include "identity.h"
#include "log.h"

static const char usage_text[] =
	"usage: moletun run [-c FILE]          run the daemon in the foreground\n"
	"       moletun check [-c FILE]        validate a configuration\n"
	"       moletun ctl [-s SOCKET] COMMAND talk to a running daemon\n"
	"       moletun help [SUBCOMMAND]\n"
	"       moletun --version\n";

static const struct help_entry {
	const char *name;
	const char *text;
} help_entries[] = {
	{"run", "usage: moletun run [-c FILE]\n"
		"Runs the daemon in the foreground (systemd Type=notify style, no forking).\n"
		"  -c FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"},
	{"check", "usage: moletun check [-c FILE]\n"
		  "Parses and validates the configuration. Prints one line per tunnel and exits 0\n"
		  "when valid; prints every error as FILE:LINE: message and exits 1 otherwise.\n"
		  "  -c FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"},
	{"ctl", "usage: moletun ctl [-s SOCKET] COMMAND [ARGS]\n"
		"Talks to a running daemon over its control socket (default " CONFIG_DEFAULT_CONTROL_SOCKET
		",\nor $MOLETUN_SOCKET).\n"
		"  status [--json] [NAME]   tunnel table; exit 0 all up, 3 some not up, 1 error\n"
		"  reconnect NAME|--all     drop and re-establish now, skipping backoff\n"
		"  reload                   re-read the configuration (same as SIGHUP)\n"
		"  metrics                  Prometheus text exposition\n"},
};

#include "daemon.h"

int ctl_main(int argc, char **argv);

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
	if (strcmp(argv[1], "config") == 0) {
		config_print_man_keys(stdout);
		return 0;
	}
	return usage_error("no help for", argv[1]);
}

/* Parses "-c FILE" for run and check; returns 0 or the exit status for a usage error. */
static int parse_config_arg(int argc, char **argv, const char **ret_path)
{
	static const struct option longopts[] = {
		{"config", required_argument, NULL, 'c'},
		{NULL, 0, NULL, 0},
	};
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+c:", longopts, NULL)) != -1) {
		if (opt == 'c')
			*ret_path = optarg;
		else
			return usage_error("bad option", argv[optind - 1]);
	}
	if (optind < argc)
		return usage_error("unexpected argument", argv[optind]);
	return 0;
}

/* The daemon would fail to start on a key its passphrase does not open: so does check. */
static int key_opens(const struct tunnel_config *t, enum tunnel_key which, char *err,
		     size_t err_size)
{
	struct identity id;
	int r = which == TUNNEL_KEY_JUMP ? identity_load_jump(t, &id, err, err_size)
					 : identity_load(t, &id, err, err_size);

	if (r == 0)
		identity_finish(&id);
	return r;
}

static int cmd_check(int argc, char **argv)
{
	const char *path = CONFIG_DEFAULT_PATH;
	struct config *c = NULL;
	struct diag diags;
	int r;

	r = parse_config_arg(argc, argv, &path);
	if (r)
		return r;
	diag_init(&diags);
	r = config_load_verified(path, key_opens, &c, &diags);
	for (size_t i = 0; i < diags.count; i++)
		fprintf(stderr, "%s\n", diags.messages[i]);
	diag_finish(&diags);
	if (r < 0)
		return 1;
	config_print_summary(c, stdout);
	config_free(c);
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	const char *path = CONFIG_DEFAULT_PATH;
	int r = parse_config_arg(argc, argv, &path);

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
	return usage_error("unknown command", argv[1]);
}
