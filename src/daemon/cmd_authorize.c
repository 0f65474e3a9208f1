#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authorize.h"
#include "commands.h"
#include "config.h"
#include "identity.h"
#include "util.h"

#define KEY_FILE_MAX (64 * 1024)

const char authorize_help[] =
    "usage: moletun authorize [-c FILE] [--from ADDR,...] [TUNNEL...]\n"
    "Prints the authorized_keys line for each tunnel's key (every tunnel by default):\n"
    "  restrict,port-forwarding,permitopen=\"TARGET\",...,permitlisten=\"LISTEN\",...,\n"
    "  command=\"" AUTHORIZE_COMMAND "\" KEY moletun@NODE:TUNNEL\n"
    "Put it in the sidecar's authorized_keys: even under a stock sshd_config the key\n"
    "then runs no command and reaches only the tunnel's targets. A tunnel through\n"
    "proxy_jump gets a line for each bastion too, allowing only the way to the next hop.\n"
    "Each line follows a comment naming the account it is for.\n"
    "  -c FILE        configuration file (default " CONFIG_DEFAULT_PATH ")\n"
    "  --from LIST    add from=\"LIST\" (addresses, host names, CIDR blocks, patterns) to\n"
    "                 the lines of servers the node reaches directly\n";

/* --from LIST: joined to the ones before with a comma. */
static int authorize_option(const struct command_line *cl, int opt, char *arg)
{
	struct authorize_args *ret = cl->userdata;
	size_t old = ret->from ? strlen(ret->from) : 0;
	char *p = realloc(ret->from, old + strlen(arg) + 2);

	if (!p) {
		fprintf(stderr, "moletun authorize: out of memory\n");
		return 2;
	}
	if (old)
		p[old++] = ',';
	strcpy(p + old, arg);
	ret->from = p;
	return 0;
}

int authorize_parse_args(int argc, char **argv, struct authorize_args *ret)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"from", required_argument, NULL, 'f'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const struct command_line cl = {
	    .cmd = "authorize",
	    .help = authorize_help,
	    .longopts = longopts,
	    .option = authorize_option,
	    .userdata = ret,
	};
	int r;

	memset(ret, 0, sizeof(*ret));
	r = tunnel_selection_parse(argc, argv, &cl, &ret->sel);
	if (r)
		return r;
	if (ret->from) {
		char err[256];

		if (authorize_check_from(ret->from, err, sizeof(err)) < 0) {
			fprintf(stderr, "moletun authorize: %s\n", err);
			return 2;
		}
	}
	return 0;
}

/* "TYPE BASE64" from the first two fields of a .pub file's text. */
static int parse_pub(const char *text, char **ret)
{
	const char *type = text, *blob, *end;
	char *out;

	while (*type == ' ' || *type == '\t')
		type++;
	blob = type;
	while (*blob && (isalnum((unsigned char)*blob) || strchr("@.-_", *blob)))
		blob++;
	if (blob == type || (*blob != ' ' && *blob != '\t'))
		return -EINVAL;
	while (*blob == ' ' || *blob == '\t')
		blob++;
	end = blob;
	while (*end && (isalnum((unsigned char)*end) || strchr("+/=", *end)))
		end++;
	if (end == blob || (*end && !isspace((unsigned char)*end)))
		return -EINVAL;
	if (asprintf(&out, "%.*s %.*s", (int)strcspn(type, " \t"), type, (int)(end - blob), blob) <
	    0)
		return -ENOMEM;
	*ret = out;
	return 0;
}

/*
 * The public key of the private key at `path`: from its public section (OpenSSH's format
 * keeps it unencrypted), else from PATH.pub. 0 or -errno with the reason in err.
 */
static int read_public_key(const char *what, const char *path, char **ret, char *err,
			   size_t err_size)
{
	struct identity id = {0};
	char *text = NULL, *pub_path = NULL;
	size_t len = 0;
	int r = read_file(path, KEY_FILE_MAX, &text, &len);

	if (r == 0) {
		id.private_key = text;
		id.private_len = len;
		r = identity_read_public(&id);
		free_secret(text, len);
		if (r == 0) {
			*ret = id.public_key;
			return 0;
		}
		if (r != -ENOTSUP) {
			snprintf(err, err_size, "%s %s: %s", what, path,
				 r == -ENOMEM ? strerror(ENOMEM) : "malformed OpenSSH private key");
			return r;
		}
	}
	/* not OpenSSH's format (PEM), or not readable by us: the .pub next to it */
	if (asprintf(&pub_path, "%s.pub", path) < 0)
		return -ENOMEM;
	text = NULL;
	r = read_file(pub_path, KEY_FILE_MAX, &text, &len);
	if (r == 0) {
		r = parse_pub(text, ret);
		if (r == -EINVAL)
			snprintf(err, err_size, "%s: not an OpenSSH public key", pub_path);
	} else {
		snprintf(err, err_size,
			 "%s %s: cannot read its public key (%s), nor %s (%s): ssh-keygen -y -f %s "
			 "> %s writes it",
			 what, path, r == -ENOTSUP ? "not in OpenSSH's format" : "unreadable",
			 pub_path, strerror(-r), path, pub_path);
	}
	free(text);
	free(pub_path);
	return r;
}

/* Adds one tunnel's lines; prints why not. 0, 1 (a key), or 2 (out of memory). */
static int add_tunnel(struct authorize_set *set, const struct tunnel_config *t)
{
	char *key = NULL, *jump_key = NULL, err[600];
	int status = 0;

	if (!t->identity_file) {
		fprintf(stderr,
			"moletun authorize: tunnel %s authenticates with ssh-agent only: no key "
			"file to read (ssh-add -L lists the agent's keys)\n",
			t->name);
		return 1;
	}
	if (read_public_key("identity file", t->identity_file, &key, err, sizeof(err)) < 0) {
		fprintf(stderr, "moletun authorize: tunnel %s: %s\n", t->name, err);
		return 1;
	}
	if (t->jump_identity_file &&
	    read_public_key("proxy_jump identity file", t->jump_identity_file, &jump_key, err,
			    sizeof(err)) < 0) {
		fprintf(stderr, "moletun authorize: tunnel %s: %s\n", t->name, err);
		status = 1;
	} else if (authorize_set_add_tunnel(set, t, key, jump_key) < 0) {
		fprintf(stderr, "moletun authorize: out of memory\n");
		status = 2;
	}
	free(key);
	free(jump_key);
	return status;
}

int authorize_run(struct authorize_args *args)
{
	const struct tunnel_config **tunnels = NULL;
	struct authorize_set set = {0};
	struct config *c = NULL;
	char node[256], label[1024], err[600];
	size_t n = 0;
	int status;

	status = tunnel_selection_load(&args->sel, "authorize", &c, &tunnels, &n);
	if (status)
		goto out;
	if (gethostname(node, sizeof(node)) < 0 || !node[0])
		snprintf(node, sizeof(node), "localhost");
	node[sizeof(node) - 1] = '\0';
	for (size_t i = 0; i < n && status != 2; i++) {
		int r = add_tunnel(&set, tunnels[i]);

		if (r > status)
			status = r;
	}
	for (size_t i = 0; i < set.n && status != 2; i++) {
		char *line;
		int r = authorize_format(&set.lines[i], args->from, node, &line, err, sizeof(err));

		if (r < 0) {
			fprintf(stderr, "moletun authorize: tunnel %s: %s\n", set.lines[i].tunnels,
				r == -ENOMEM ? strerror(ENOMEM) : err);
			status = r == -ENOMEM ? 2 : 1;
			continue;
		}
		authorize_format_label(&set.lines[i], args->from != NULL, label, sizeof(label));
		printf("%s\n%s\n", label, line);
		free(line);
	}
	if (fflush(stdout) != 0 && status == 0)
		status = 1;
out:
	authorize_set_free(&set);
	free(tunnels);
	config_free(c);
	free(args->from);
	args->from = NULL;
	return status;
}
