#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "audit_conn.h"
#include "audit_probe.h"
#include "commands.h"
#include "config.h"
#include "jumpspec.h"
#include "textenc.h"

const char audit_help[] =
    "usage: moletun audit [-c FILE] [--json] [--socket PATH]... [TUNNEL...]\n"
    "Connects to each tunnel's sidecar (every tunnel by default) with the tunnel's own key,\n"
    "known_hosts and proxy_jump bastions, and checks what the sidecar allows: the\n"
    "algorithms it offers, public-key authentication only, no session channel (or only\n"
    "a forced command), no pty, no SFTP, direct-tcpip to the tunnel's targets only, no\n"
    "Unix socket forwarding, no remote listens but the tunnel's. Every probe is harmless:\n"
    "channels close at once and nothing is sent to any destination. One line per check:\n"
    "pass, warn, fail or skip, and for what is not a pass, what fixes it and where\n"
    "(authorized_keys: the key line moletun authorize prints; sshd_config: only the\n"
    "server's configuration can).\n"
    "  -c FILE        configuration file (default " CONFIG_DEFAULT_PATH ")\n"
    "  --json         one JSON document instead of the table\n"
    "  --socket PATH  probe this Unix socket on the sidecar too (its database's socket)\n"
    "Exit status: 0 nothing failed, 1 a check failed, 2 usage or configuration error,\n"
    "3 a sidecar could not be reached or authenticated to.\n";

/* --json, --socket PATH. */
static int audit_option(const struct command_line *cl, int opt, char *arg)
{
	struct audit_args *ret = cl->userdata;
	size_t max_sockets = sizeof(ret->sockets) / sizeof(ret->sockets[0]);

	if (opt == 'j') {
		ret->json = true;
		return 0;
	}
	if (arg[0] != '/' || strlen(arg) > 1024)
		return command_usage_error(cl, "--socket needs an absolute path, not", arg);
	if (ret->n_sockets == max_sockets)
		return command_usage_error(cl, "too many --socket at", arg);
	ret->sockets[ret->n_sockets++] = arg;
	return 0;
}

int audit_parse_args(int argc, char **argv, struct audit_args *ret)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"json", no_argument, NULL, 'j'},
	    {"socket", required_argument, NULL, 's'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const struct command_line cl = {
	    .cmd = "audit",
	    .help = audit_help,
	    .longopts = longopts,
	    .option = audit_option,
	    .userdata = ret,
	};

	memset(ret, 0, sizeof(*ret));
	return tunnel_selection_parse(argc, argv, &cl, &ret->sel);
}

/* One tunnel's audit: the findings, and whether it could be done at all. */
struct tunnel_audit {
	const struct tunnel_config *t;
	struct audit_report report;
	char version[KEXINIT_VERSION_MAX + 1];
	int status; /* 0, 2 (configuration) or 3 (connection) */
	char error[800];
};

_Static_assert(sizeof(((struct audit_args *)0)->sockets) / sizeof(char *) <= AUDIT_SOCKETS_MAX,
	       "every --socket fits in the plan");

/* The probes over the authenticated session, in order, on the blocking session (each
 * step bounded by its timeout). 0 or a libssh2 error that ended it. */
static int run_probes(const struct audit_args *a, struct tunnel_audit *ta, LIBSSH2_SESSION *s)
{
	struct audit_plan *plan = malloc(sizeof(*plan));
	int rc;

	if (!plan)
		return LIBSSH2_ERROR_ALLOC;
	/* a command's output is read for what one step may take, and a second more */
	audit_plan_init(plan, ta->t, AUDIT_SCOPE_FULL, a->sockets, a->n_sockets,
			(double)libssh2_session_get_timeout(s) / 1000.0 + 1.0);
	rc = audit_plan_run(plan, s, NULL, &ta->report);
	free(plan);
	return rc;
}

static const char *kexinit_error_str(int r)
{
	switch (r) {
	case -EPROTO:
		return "not an SSH-2 server, or its first packet is not a KEXINIT";
	case -EINVAL:
		return "malformed version line or KEXINIT";
	case -E2BIG:
		return "version line or KEXINIT too long";
	case -ECONNRESET:
		return "the connection closed first";
	default:
		return strerror(-r);
	}
}

static void audit_tunnel(const struct audit_args *a, struct tunnel_audit *ta)
{
	struct audit_conn c;
	int r;

	audit_report_init(&ta->report);
	r = audit_conn_open(&c, ta->t);
	if (c.kexinit_error == 0 && c.kexinit.version[0]) {
		snprintf(ta->version, sizeof(ta->version), "%s", c.kexinit.version);
		audit_judge_algorithms(&ta->report, &c.kexinit);
	} else if (c.failure != AUDIT_CONN_CONFIG && (r == 0 || c.kexinit_error != 0)) {
		audit_add(&ta->report, "algorithms", NULL, AUDIT_WARN, AUDIT_FIX_NONE, NULL,
			  "could not read the server's KEXINIT: %s",
			  kexinit_error_str(c.kexinit_error));
	}
	if (c.host_key[0])
		audit_judge_host_key(&ta->report, c.host_key,
				     c.host_key_state == AUDIT_HOST_KEY_VERIFIED);
	if (c.auth_listed)
		audit_judge_auth_methods(&ta->report, c.none_accepted ? NULL : c.auth_methods);
	if (r == 0) {
		r = run_probes(a, ta, audit_conn_session(&c));
		if (r) {
			char *msg = NULL;

			libssh2_session_last_error(audit_conn_session(&c), &msg, NULL, 0);
			ta->status = 3;
			snprintf(ta->error, sizeof(ta->error),
				 "the session failed during the checks: %s",
				 msg && *msg ? msg : "unknown error");
		}
	} else {
		ta->status = c.failure == AUDIT_CONN_CONFIG ? 2 : 3;
		snprintf(ta->error, sizeof(ta->error), "%s", c.error);
	}
	audit_conn_close(&c);
}

static void counts(const struct audit_report *r, size_t n[4])
{
	memset(n, 0, 4 * sizeof(*n));
	for (size_t i = 0; i < r->n; i++)
		n[r->items[i].result]++;
}

static const char *tunnel_result(const struct tunnel_audit *ta)
{
	return ta->status ? "error" : audit_result_str(audit_report_worst(&ta->report));
}

static void print_text(const struct tunnel_audit *ta, bool first, FILE *out)
{
	const struct tunnel_config *t = ta->t;
	char via[JUMP_HOPS_MAX * JUMP_HOP_TEXT_MAX];
	size_t n[4];

	jumpspec_format(t->jump_hops, t->n_jump_hops, via, sizeof(via));
	fprintf(out, "%stunnel %s: %s@%s%s%s:%u%s%s%s%s\n", first ? "" : "\n", t->name, t->user,
		strchr(t->host, ':') ? "[" : "", t->host, strchr(t->host, ':') ? "]" : "", t->port,
		via[0] ? " via " : "", via, ta->version[0] ? ", " : "", ta->version);
	if (ta->report.n)
		audit_report_print_text(&ta->report, out);
	counts(&ta->report, n);
	if (ta->status)
		fprintf(out, "tunnel %s: error: %s\n", t->name, ta->error);
	else
		fprintf(out, "tunnel %s: %s (%zu fail, %zu warn, %zu pass, %zu skip)\n", t->name,
			tunnel_result(ta), n[AUDIT_FAIL], n[AUDIT_WARN], n[AUDIT_PASS],
			n[AUDIT_SKIP]);
}

static void json_str(FILE *out, const char *s)
{
	fputc('"', out);
	text_put_escaped(out, s, strlen(s), TEXT_ESCAPE_JSON);
	fputc('"', out);
}

static void print_json_tunnel(const struct tunnel_audit *ta, FILE *out)
{
	const struct tunnel_config *t = ta->t;
	char hop[JUMP_HOP_TEXT_MAX];

	fputs("{\"tunnel\":", out);
	json_str(out, t->name);
	fputs(",\"host\":", out);
	json_str(out, t->host);
	fprintf(out, ",\"port\":%u,\"user\":", t->port);
	json_str(out, t->user);
	fputs(",\"via\":[", out);
	for (size_t i = 0; i < t->n_jump_hops; i++) {
		jumpspec_format_hop(&t->jump_hops[i], hop, sizeof(hop));
		if (i)
			fputc(',', out);
		json_str(out, hop);
	}
	fputs("],\"server_version\":", out);
	if (ta->version[0])
		json_str(out, ta->version);
	else
		fputs("null", out);
	fprintf(out, ",\"result\":\"%s\",\"error\":", tunnel_result(ta));
	if (ta->status)
		json_str(out, ta->error);
	else
		fputs("null", out);
	fputs(",\"checks\":", out);
	audit_report_print_json(&ta->report, out);
	fputc('}', out);
}

int audit_run(const struct audit_args *args)
{
	const struct tunnel_config **tunnels = NULL;
	struct tunnel_audit *audits = NULL;
	struct config *c = NULL;
	size_t n = 0;
	int status;
	bool failed = false, config_error = false, unreachable = false;

	status = tunnel_selection_load(&args->sel, "audit", &c, &tunnels, &n);
	if (status)
		return status;
	audits = calloc(n, sizeof(*audits));
	if (!audits || libssh2_init(0) != 0) {
		fprintf(stderr, "moletun audit: out of memory\n");
		free(audits);
		free(tunnels);
		config_free(c);
		return 2;
	}
	for (size_t i = 0; i < n; i++) {
		audits[i].t = tunnels[i];
		audit_tunnel(args, &audits[i]);
		config_error = config_error || audits[i].status == 2;
		unreachable = unreachable || audits[i].status == 3;
		failed = failed || audit_report_worst(&audits[i].report) == AUDIT_FAIL;
		if (!args->json)
			print_text(&audits[i], i == 0, stdout);
	}
	if (args->json) {
		enum audit_result all = AUDIT_PASS;

		for (size_t i = 0; i < n; i++) {
			enum audit_result w = audit_report_worst(&audits[i].report);

			if (w == AUDIT_FAIL || (w == AUDIT_WARN && all == AUDIT_PASS))
				all = w;
		}
		printf("{\"result\":\"%s\",\"tunnels\":[",
		       config_error || unreachable ? "error" : audit_result_str(all));
		for (size_t i = 0; i < n; i++) {
			if (i)
				putchar(',');
			print_json_tunnel(&audits[i], stdout);
		}
		printf("]}\n");
	}
	for (size_t i = 0; i < n; i++)
		audit_report_finish(&audits[i].report);
	libssh2_exit();
	free(audits);
	free(tunnels);
	config_free(c);
	if (fflush(stdout) != 0)
		return 2;
	/* a configuration error first, then what could not be reached, then failed checks */
	if (config_error)
		return 2;
	if (unreachable)
		return 3;
	return failed ? 1 : 0;
}
