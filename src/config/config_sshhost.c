#include "config.h"
#include "jumpspec.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "config_internal.h"
#include "config_table.h"
#include "sshconf.h"
#include "subproc.h"

/*
 * ssh_host: the keys of a tunnel filled in from `ssh -G`, OpenSSH's own evaluation of
 * ssh_config, where the section did not set them. What ssh -G prints is read by
 * sshconf.c; this file runs it, refuses what moletun cannot honour and sets the keys.
 */

/* ssh -G answers in milliseconds; a config that takes seconds is hanging on something. */
#define SSH_G_TIMEOUT_MS 5000
/* All runs of one load together: a reload runs them on the loop, and the unit's watchdog
 * (WatchdogSec=30s) must not fire however many tunnels hang. */
#define SSH_G_BUDGET_MS 10000
/* Its output is ~10K; an Include of a huge file should not grow the daemon. */
#define SSH_G_OUTPUT_MAX (256 * 1024)

/* One tunnel being resolved: where its errors go and what it sets. */
struct resolve {
	struct loader *l;
	struct tunnel_config *t;
	struct section_state *s;
	struct where at; /* the ssh_host line */
};

static void resolve_error(struct resolve *rs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void resolve_error(struct resolve *rs, const char *fmt, ...)
{
	char text[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	loader_error(rs->l, rs->at, "ssh_host %s: %s", rs->t->ssh_host, text);
	rs->s->unresolved = true;
}

/* Why ssh -G gave no usable answer, or NULL when it did. */
static const char *run_failure(const struct subproc_result *res, char *buf, size_t size,
			       const char *message)
{
	if (res->timed_out)
		return "ssh -G did not answer in time (killed)";
	if (res->too_long)
		return "ssh -G printed more than 256K (killed)";
	if (WIFEXITED(res->status) && WEXITSTATUS(res->status) == 0)
		return NULL;
	if (message)
		snprintf(buf, size, "ssh -G failed: %s", message);
	else if (WIFEXITED(res->status))
		snprintf(buf, size, "ssh -G failed with exit status %d", WEXITSTATUS(res->status));
	else
		snprintf(buf, size, "ssh -G was killed by signal %d", WTERMSIG(res->status));
	return buf;
}

/* Runs ssh -G -T -v [-F file] alias into *ret; 0, or -1 with the error reported. */
static int ssh_g(struct resolve *rs, const char *alias, struct sshconf *ret)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", NULL};
	char *argv[8] = {"ssh", "-G", "-T", "-v"};
	size_t argc = 4;
	int64_t left;
	struct subproc_result res;
	char why[400];
	const char *failure;
	int r;

	if (rs->t->ssh_config) {
		argv[argc++] = "-F";
		argv[argc++] = rs->t->ssh_config;
	}
	argv[argc++] = (char *)alias;
	if (rs->l->ssh_g_deadline_ms == 0)
		rs->l->ssh_g_deadline_ms = clock_now_ms() + SSH_G_BUDGET_MS;
	left = rs->l->ssh_g_deadline_ms - clock_now_ms();
	if (left <= 0) {
		resolve_error(rs, "not run: the ssh -G runs of this load took 10s already");
		return -1;
	}
	r = subproc_run(argv, envp, left < SSH_G_TIMEOUT_MS ? (uint64_t)left : SSH_G_TIMEOUT_MS,
			SSH_G_OUTPUT_MAX, &res);
	if (r == -ENOMEM) {
		rs->l->out_of_memory = true;
		return -1;
	}
	if (r < 0) {
		if (r == -ENOENT)
			resolve_error(rs, "cannot run ssh: not found in PATH (install "
					  "openssh-client)");
		else
			resolve_error(rs, "cannot run ssh: %s", strerror(-r));
		return -1;
	}
	r = sshconf_parse(res.out, res.err, ret);
	if (r < 0) {
		subproc_result_free(&res);
		rs->l->out_of_memory = true;
		return -1;
	}
	failure = run_failure(&res, why, sizeof(why), ret->message);
	subproc_result_free(&res);
	if (failure || !ret->hostname) {
		resolve_error(rs, "%s", failure ? failure : "ssh -G printed no hostname");
		sshconf_free(ret);
		return -1;
	}
	return 0;
}

/* What moletun cannot do as ssh would: reported, and the tunnel left unresolved. */
static int refuse_unsupported(struct resolve *rs, const struct sshconf *c)
{
	const char *files =
	    rs->t->ssh_config ? rs->t->ssh_config : "~/.ssh/config or /etc/ssh/ssh_config";

	if (c->match_exec)
		resolve_error(rs, "ssh_config uses Match exec, whose command ssh -G ran: moletun "
				  "refuses configurations that run commands");
	else if (!sshconf_alias_known(c, rs->t->ssh_host))
		resolve_error(rs, "unknown alias: no Host line in %s applies to it", files);
	else if (c->proxy_command)
		resolve_error(rs, "ssh_config sets ProxyCommand, which moletun does not run (use "
				  "ProxyJump, or proxy_jump here)");
	else if (c->certificate_file)
		resolve_error(rs, "ssh_config sets CertificateFile: moletun does not authenticate "
				  "with certificates");
	else
		return 0;
	return -1;
}

/* "~/x" with the home of the user moletun runs as (ssh's rule); NULL when out of memory. */
static char *expand_home(const char *path)
{
	struct passwd *pw;
	char *out;

	if (strncmp(path, "~/", 2) != 0)
		return strdup(path);
	pw = getpwuid(getuid());
	if (!pw || !pw->pw_dir)
		return strdup(path);
	if (asprintf(&out, "%s%s", pw->pw_dir, path + 1) < 0)
		return NULL;
	return out;
}

/*
 * Whether ssh_config's value for tunnel key `i` is taken: not when the section set the key
 * (recorded as overridden); otherwise the key counts as given, at the ssh_host line.
 */
static bool ssh_gives(struct resolve *rs, size_t i)
{
	if (rs->s->key_at[i].line) {
		rs->t->ssh_config_overridden |= 1u << i;
		return false;
	}
	rs->s->key_at[i] = rs->at;
	rs->t->ssh_config_keys |= 1u << i;
	return true;
}

/* Sets `value` (as written in a file); a value the key refuses is reported at ssh_host. */
static void set_value(struct resolve *rs, const struct config_key *k, size_t i, const char *value)
{
	char err[512];
	int r = config_key_set(k, rs->t, value, NULL, err, sizeof(err));

	if (r == -ENOMEM) {
		rs->l->out_of_memory = true;
	} else if (r < 0) {
		loader_error(rs->l, rs->at, "ssh_host %s: from ssh_config: %s", rs->t->ssh_host,
			     err);
		rs->s->key_bad[i] = true;
	}
}

/* The tunnel key `name` set to ssh_config's `value` unless the section set it. */
static void take(struct resolve *rs, const char *name, const char *value)
{
	const struct config_key *k = config_key_find(CONFIG_SECTION_TUNNEL, name);
	size_t i = config_key_index(CONFIG_SECTION_TUNNEL, k);

	if (ssh_gives(rs, i))
		set_value(rs, k, i, value);
}

/* A path key from ssh_config: '~' expanded, and it must then be absolute. */
static void take_path(struct resolve *rs, const char *name, const char *path)
{
	char *full = expand_home(path);

	if (!full) {
		rs->l->out_of_memory = true;
		return;
	}
	if (full[0] != '/')
		loader_error(rs->l, rs->at,
			     "ssh_host %s: %s %s from ssh_config is not an "
			     "absolute path",
			     rs->t->ssh_host, name, path);
	else
		take(rs, name, full);
	free(full);
}

/* The first IdentityFile that exists, as ssh tries them in order. */
static void take_identity(struct resolve *rs, const struct sshconf *c)
{
	for (size_t i = 0; i < c->n_identity_files; i++) {
		char *full = expand_home(c->identity_files[i]);
		struct stat st;
		bool found;

		if (!full) {
			rs->l->out_of_memory = true;
			return;
		}
		found = full[0] == '/' && stat(full, &st) == 0;
		free(full);
		if (found) {
			take_path(rs, "identity_file", c->identity_files[i]);
			return;
		}
	}
}

/* Every LocalForward (or RemoteForward), unless the section has a forward of that kind. */
static void take_forwards(struct resolve *rs, const char *name, char *const *forwards, size_t n)
{
	const struct config_key *k = config_key_find(CONFIG_SECTION_TUNNEL, name);
	size_t i = config_key_index(CONFIG_SECTION_TUNNEL, k);

	if (n == 0 || !ssh_gives(rs, i))
		return;
	for (size_t f = 0; f < n && !loader_stopped(rs->l); f++) {
		size_t before = rs->t->n_forwards;
		struct where *items;

		set_value(rs, k, i, forwards[f]);
		if (rs->t->n_forwards == before)
			continue;
		/* check_listen_conflicts() reports a forward at its item's place */
		items = array_grow(rs->s->items, rs->s->n_items, sizeof(*items));
		if (!items) {
			rs->l->out_of_memory = true;
			return;
		}
		rs->s->items = items;
		rs->s->items[rs->s->n_items++] = rs->at;
	}
}

/* A number as the key writes it: "7s" for a duration (`unit` "s"), "7" for a count. */
static void take_number(struct resolve *rs, const char *name, unsigned n, const char *unit)
{
	char text[32];

	snprintf(text, sizeof(text), "%u%s", n, unit);
	take(rs, name, text);
}

/* Every value moletun takes from ssh -G (see the help of ssh_host). */
static void take_all(struct resolve *rs, const struct sshconf *c)
{
	const char *policy = sshconf_host_key_policy(c);

	take(rs, "host", c->hostname);
	if (c->port)
		take_number(rs, "port", c->port, "");
	if (c->user)
		take(rs, "user", c->user);
	take_identity(rs, c);
	if (c->known_hosts_file)
		take_path(rs, "known_hosts_file", c->known_hosts_file);
	if (policy)
		take(rs, "strict_host_key_checking", policy);
	if (c->proxy_jump)
		take(rs, "proxy_jump", c->proxy_jump);
	if (c->connect_timeout)
		take_number(rs, "connect_timeout", c->connect_timeout, "s");
	if (c->alive_interval) {
		take_number(rs, "keepalive_interval", c->alive_interval, "s");
		if (c->alive_count_max)
			take_number(rs, "keepalive_count_max", c->alive_count_max, "");
	}
	take_forwards(rs, "local_forward", c->local_forwards, c->n_local_forwards);
	take_forwards(rs, "remote_forward", c->remote_forwards, c->n_remote_forwards);
}

/* A bastion named by a Host alias gets its HostName, Port and User, as ssh -J does. */
static void resolve_hop(struct resolve *rs, struct jump_hop *hop)
{
	struct sshconf c;
	char *host;

	if (ssh_g(rs, hop->host, &c) < 0)
		return;
	if (c.match_exec || c.proxy_command) {
		loader_error(rs->l, rs->at,
			     "ssh_host %s: proxy_jump hop %s: ssh_config uses %s, which moletun "
			     "does not run",
			     rs->t->ssh_host, hop->host,
			     c.match_exec ? "Match exec" : "ProxyCommand");
	} else if (sshconf_alias_known(&c, hop->host)) {
		host = strdup(c.hostname);
		if (!host || (!hop->user && c.user && !(hop->user = strdup(c.user)))) {
			free(host);
			rs->l->out_of_memory = true;
		} else {
			free(hop->host);
			hop->host = host;
			if (hop->port == 22 && c.port)
				hop->port = c.port;
		}
	}
	sshconf_free(&c);
}

static void resolve_hops(struct resolve *rs)
{
	const struct config_key *k = config_key_find(CONFIG_SECTION_TUNNEL, "proxy_jump");
	size_t i = config_key_index(CONFIG_SECTION_TUNNEL, k);

	if (!(rs->t->ssh_config_keys & (1u << i)) || rs->s->key_bad[i])
		return;
	for (size_t h = 0; h < rs->t->n_jump_hops && !loader_stopped(rs->l); h++)
		resolve_hop(rs, &rs->t->jump_hops[h]);
}

/* ssh -F would say so too, but not at the line of the key. */
static bool ssh_config_readable(struct resolve *rs)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	int fd = open(rs->t->ssh_config, O_RDONLY | O_CLOEXEC);
	struct stat st;
	const char *why = NULL;

	if (fd < 0)
		why = strerror(errno);
	else if (fstat(fd, &st) < 0)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	if (fd >= 0)
		close(fd);
	if (why)
		loader_error(rs->l, section_key_where(rs->s, sec, "ssh_config"),
			     "ssh_config %s: %s", rs->t->ssh_config, why);
	return why == NULL;
}

static void resolve_tunnel(struct loader *l, size_t i)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	struct resolve rs = {.l = l, .t = &l->config->tunnels[i], .s = &l->tunnel_states[i]};
	struct sshconf c;

	rs.at = section_key_where(rs.s, sec, "ssh_host");
	if (section_key_given(rs.s, sec, "ssh_config") && !section_key_given(rs.s, sec, "ssh_host"))
		loader_error(l, section_key_where(rs.s, sec, "ssh_config"),
			     "ssh_config needs ssh_host");
	if (section_key_bad(rs.s, sec, "ssh_host") || section_key_bad(rs.s, sec, "ssh_config"))
		rs.s->unresolved = true;
	if (!rs.t->ssh_host || rs.s->unresolved)
		return;
	if (l->no_includes) {
		resolve_error(&rs, "not allowed here (ssh -G is not run)");
		return;
	}
	if (rs.t->ssh_host[0] == '-') {
		resolve_error(&rs, "an alias cannot start with '-'");
		return;
	}
	if (rs.t->ssh_config && !ssh_config_readable(&rs)) {
		rs.s->unresolved = true;
		return;
	}
	if (ssh_g(&rs, rs.t->ssh_host, &c) < 0)
		return;
	if (refuse_unsupported(&rs, &c) == 0) {
		take_all(&rs, &c);
		resolve_hops(&rs);
	}
	sshconf_free(&c);
}

void loader_resolve_ssh_hosts(struct loader *l)
{
	for (size_t i = 0; i < l->config->n_tunnels && !loader_stopped(l); i++)
		resolve_tunnel(l, i);
}
