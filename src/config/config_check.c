#include "config.h"
#include "jumpspec.h"
#include "fwdspec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_internal.h"
#include "config_table.h"
#include "duration.h"
#include "privfile.h"

/*
 * The checks that need more than one key, or the files the keys name: required keys and
 * the keys that go together, key and known_hosts files, listen addresses used twice,
 * alert targets; and the warnings the daemon logs at start.
 */

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum key_kind {
	KEY_PLAIN,
	KEY_ENCRYPTED,
	KEY_PUBLIC,
	KEY_UNKNOWN,
};

/*
 * Looks at the start of an identity file, so that a public key given by mistake, a file
 * that is not a key, or an encrypted key without a passphrase file is caught here rather
 * than at the first connection.
 */
static int key_kind_read(int fd, enum key_kind *ret)
{
	/* base64 of "openssh-key-v1\0", then of the cipher name "none" */
	static const char openssh_magic[] = "b3BlbnNzaC1rZXktdjEA";
	static const char openssh_plain[] = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU";
	char head[512], *body;
	ssize_t n = read(fd, head, sizeof(head) - 1);

	if (n < 0)
		return -errno;
	head[n] = '\0';
	body = strchr(head, '\n');
	body = body ? body + 1 : head;
	if (starts_with(head, "ssh-") || starts_with(head, "ecdsa-") || starts_with(head, "sk-"))
		*ret = KEY_PUBLIC;
	else if (!starts_with(head, "-----BEGIN ") || !strstr(head, "PRIVATE KEY-----"))
		*ret = KEY_UNKNOWN;
	else if (starts_with(head, "-----BEGIN OPENSSH PRIVATE KEY-----"))
		*ret = starts_with(body, openssh_magic) && !starts_with(body, openssh_plain)
			   ? KEY_ENCRYPTED
			   : KEY_PLAIN;
	else
		*ret = strstr(head, "ENCRYPTED") ? KEY_ENCRYPTED : KEY_PLAIN;
	/* the start of an unencrypted key is the key */
	explicit_bzero(head, sizeof(head));
	return 0;
}

/* Records the digest of the open `fd` for reload, or reports why it cannot be read. */
static void record_digest(struct loader *l, const char *what, const char *path, struct where at,
			  int fd, struct file_digest *ret)
{
	int r = file_digest_read(fd, ret);

	if (r < 0)
		loader_error(l, at, "%s %s: %s", what, path, strerror(-r));
}

/*
 * OpenSSH's rule for private keys: a regular file that only its owner may access; and
 * ours: not through a symbolic link, owned by root or the daemon's user, checked on the
 * descriptor that is read (privfile_open). For an identity file (`is_key`), what kind of
 * key it holds is reported first: a public key is usually mode 0644, and "use the private
 * key" is the more useful message; an encrypted one without `has_passphrase` names
 * `passphrase_key`. A file that passes gets its digest recorded in *ret_digest. Returns
 * true when it passed.
 */
static bool check_private_file(struct loader *l, const char *what, const char *path,
			       struct where at, const char *refused, bool is_key,
			       const char *passphrase_key, bool has_passphrase,
			       struct file_digest *ret_digest)
{
	enum key_kind kind = KEY_PLAIN;
	struct privfile_result res;
	/* the mode is checked below, after the kind of key */
	int fd = privfile_open(path, O_RDONLY, 0, &res);
	size_t errors = l->errors;
	char why[200];
	int r;

	if (fd < 0) {
		privfile_describe(&res, why, sizeof(why));
		loader_error(l, at, "%s %s: %s", what, path, why);
		return false;
	}
	if (is_key) {
		r = key_kind_read(fd, &kind);
		if (r < 0) {
			loader_error(l, at, "%s %s: %s", what, path, strerror(-r));
			goto out;
		}
	}
	if (kind == KEY_PUBLIC)
		loader_error(l, at, "%s %s is a public key: use the private key", what, path);
	else if (kind == KEY_UNKNOWN)
		loader_error(l, at, "%s %s is not a private key (expected OpenSSH format)", what,
			     path);
	else if (res.st.st_mode & PRIVFILE_MODE_SECRET)
		loader_error(l, at,
			     "%s %s is %s by group or others (mode %04o): like OpenSSH, moletun "
			     "refuses unprotected %s",
			     what, path, (res.st.st_mode & 044) ? "readable" : "accessible",
			     (unsigned)(res.st.st_mode & 07777), refused);
	else if (kind == KEY_ENCRYPTED && !has_passphrase)
		loader_error(l, at, "%s %s is encrypted: set %s", what, path, passphrase_key);
	else
		record_digest(l, what, path, at, fd, ret_digest);
out:
	close(fd);
	return l->errors == errors;
}

/*
 * A reload compares the contents of known_hosts_file only under strict_host_key_checking =
 * yes (the daemon narrows the digest taken here to the lines that name the tunnel's server
 * or bastions: daemon_digest_known_hosts). Under accept-new moletun appends to the file itself, so
 * every tunnel naming it would restart at the next reload after any of them learned a host key, and
 * such a restart would re-check little: the file is read again at every connection anyway, and a
 * host missing from it is trusted anew. After correcting a learned key by hand, use moletun ctl
 * reconnect. Under no, the file decides nothing. The file is held to the rule hostkey.c
 * reads it under: no symbolic link, owner root or the daemon's user, not writable by group
 * or others.
 */
static void check_known_hosts(struct loader *l, struct tunnel_config *t, struct where at)
{
	const char *path = t->known_hosts_file;
	struct privfile_result res;
	struct stat st;
	char *dir, why[200];
	int fd = privfile_open(path, O_RDONLY, PRIVFILE_MODE_TRUSTED, &res);

	if (fd >= 0) {
		if (t->strict_host_key_checking == HOST_KEY_STRICT)
			record_digest(l, "known_hosts file", path, at, fd,
				      &t->known_hosts_file_digest);
		close(fd);
		return;
	}
	if (res.problem != PRIVFILE_ERRNO || res.error != ENOENT ||
	    t->strict_host_key_checking != HOST_KEY_ACCEPT_NEW) {
		privfile_describe(&res, why, sizeof(why));
		loader_error(l, at, "known_hosts file %s: %s", path, why);
		return;
	}
	/* accept-new creates the file, but not its directory. */
	dir = loader_dir_of(path);
	if (!dir) {
		l->out_of_memory = true;
		return;
	}
	if (stat(dir, &st) < 0)
		loader_error(l, at, "known_hosts file %s cannot be created: %s: %s", path, dir,
			     strerror(errno));
	else if (!S_ISDIR(st.st_mode))
		loader_error(l, at, "known_hosts file %s cannot be created: %s: not a directory",
			     path, dir);
	free(dir);
}

/* The names of one key's config keys and where its fields are. */
struct key_files {
	const char *key_name, *passphrase_name;
	const char *what, *passphrase_what; /* in messages */
	char *path, *passphrase_path;
	struct file_digest *digest, *passphrase_digest;
};

static struct key_files key_files_of(struct tunnel_config *t, enum tunnel_key which)
{
	if (which == TUNNEL_KEY_JUMP)
		return (struct key_files){
		    .key_name = "proxy_jump_identity_file",
		    .passphrase_name = "proxy_jump_identity_passphrase_file",
		    .what = "proxy_jump identity file",
		    .passphrase_what = "proxy_jump identity passphrase file",
		    .path = t->jump_identity_file,
		    .passphrase_path = t->jump_identity_passphrase_file,
		    .digest = &t->jump_identity_file_digest,
		    .passphrase_digest = &t->jump_identity_passphrase_file_digest,
		};
	return (struct key_files){
	    .key_name = "identity_file",
	    .passphrase_name = "identity_passphrase_file",
	    .what = "identity file",
	    .passphrase_what = "identity passphrase file",
	    .path = t->identity_file,
	    .passphrase_path = t->identity_passphrase_file,
	    .digest = &t->identity_file_digest,
	    .passphrase_digest = &t->identity_passphrase_file_digest,
	};
}

/*
 * One key and its passphrase file: the permission and format checks, then (moletun check)
 * whether the passphrase opens the key; the daemon would find out anyway.
 */
static void check_key_files(struct loader *l, struct tunnel_config *t,
			    const struct section_state *s, enum tunnel_key which)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	struct key_files k = key_files_of(t, which);
	bool key_ok = false;

	if (k.path)
		key_ok = check_private_file(l, k.what, k.path, section_key_where(s, sec, k.key_name),
					    "private keys", true, k.passphrase_name,
					    k.passphrase_path != NULL, k.digest);
	if (k.passphrase_path)
		key_ok = check_private_file(l, k.passphrase_what, k.passphrase_path,
					    section_key_where(s, sec, k.passphrase_name), "key passphrases",
					    false, NULL, false, k.passphrase_digest) &&
			 key_ok;
	if (k.path && key_ok && l->verify_key) {
		char err[512];

		if (l->verify_key(t, which, err, sizeof(err)) < 0)
			loader_error(l, section_key_where(s, sec, k.key_name), "%s", err);
	}
}

/* proxy_jump's keys, and every hop's user (the tunnel's unless the hop names one). */
static void validate_jump(struct loader *l, struct tunnel_config *t, const struct section_state *s)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	bool jump_bad = section_key_bad(s, sec, "proxy_jump");

	if (section_key_given(s, sec, "proxy_jump_identity_file") && t->n_jump_hops == 0 && !jump_bad)
		loader_error(l, section_key_where(s, sec, "proxy_jump_identity_file"),
			     "proxy_jump_identity_file needs proxy_jump");
	if (section_key_given(s, sec, "proxy_jump_identity_passphrase_file") &&
	    !section_key_given(s, sec, "proxy_jump_identity_file"))
		loader_error(l, section_key_where(s, sec, "proxy_jump_identity_passphrase_file"),
			     "proxy_jump_identity_passphrase_file needs proxy_jump_identity_file");
	check_key_files(l, t, s, TUNNEL_KEY_JUMP);
	for (size_t h = 0; h < t->n_jump_hops && t->user; h++) {
		if (t->jump_hops[h].user)
			continue;
		t->jump_hops[h].user = strdup(t->user);
		if (!t->jump_hops[h].user)
			l->out_of_memory = true;
	}
}

static void validate_tunnel(struct loader *l, size_t i)
{
	const enum config_section sec = CONFIG_SECTION_TUNNEL;
	const struct config_section_info *info = &config_sections[sec];
	struct tunnel_config *t = &l->config->tunnels[i];
	const struct section_state *s = &l->tunnel_states[i];

	if (s->unresolved)
		return;
	for (size_t k = 0; k < info->n_keys; k++)
		if ((info->keys[k].flags & CONFIG_KEY_REQUIRED) && !s->key_at[k].line)
			loader_error(l, s->at, "missing required key '%s' in [tunnel:%s]",
				     info->keys[k].name, t->name);
	if (!section_key_given(s, sec, "local_forward") && !section_key_given(s, sec, "remote_forward"))
		loader_error(l, s->at,
			     "no forwards in [tunnel:%s] (add local_forward or remote_forward)",
			     t->name);
	if (!section_key_given(s, sec, "identity_file") && !t->use_agent && !section_key_bad(s, sec, "use_agent"))
		loader_error(l, s->at,
			     "no authentication in [tunnel:%s] (set identity_file or use_agent = "
			     "yes)",
			     t->name);
	if (section_key_given(s, sec, "identity_passphrase_file") && !section_key_given(s, sec, "identity_file"))
		loader_error(l, section_key_where(s, sec, "identity_passphrase_file"),
			     "identity_passphrase_file needs identity_file");
	if (section_key_given(s, sec, "agent_socket") && !t->use_agent && !section_key_bad(s, sec, "use_agent"))
		loader_error(l, section_key_where(s, sec, "agent_socket"),
			     "agent_socket needs use_agent = yes");
	check_key_files(l, t, s, TUNNEL_KEY_IDENTITY);
	validate_jump(l, t, s);
	if (!section_key_bad(s, sec, "strict_host_key_checking") &&
	    t->strict_host_key_checking != HOST_KEY_NO) {
		if (!section_key_given(s, sec, "known_hosts_file"))
			loader_error(l, s->at,
				     "known_hosts_file required unless strict_host_key_checking = "
				     "no");
		else if (t->known_hosts_file)
			check_known_hosts(l, t, section_key_where(s, sec, "known_hosts_file"));
	}
	if (!section_key_bad(s, sec, "backoff_initial") && !section_key_bad(s, sec, "backoff_max") &&
	    t->backoff_initial_ms > t->backoff_max_ms) {
		char initial[32], max[32];
		struct where at = section_key_given(s, sec, "backoff_initial")
				      ? section_key_where(s, sec, "backoff_initial")
				      : section_key_where(s, sec, "backoff_max");

		duration_format(t->backoff_initial_ms, initial, sizeof(initial));
		duration_format(t->backoff_max_ms, max, sizeof(max));
		loader_error(l, at, "backoff_initial %s is greater than backoff_max %s", initial,
			     max);
	}
}

struct listen_entry {
	const struct forward_spec *forward;
	size_t tunnel;
	struct where at;
	size_t seq;
};

static int listen_entry_compare(const void *a, const void *b)
{
	const struct listen_entry *x = a, *y = b;

	if (x->forward->listen_port != y->forward->listen_port)
		return x->forward->listen_port < y->forward->listen_port ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool is_wildcard(const char *host)
{
	return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* Same port, and the same address or a wildcard on either side. */
static bool listen_conflict(const struct config *c, const struct listen_entry *a,
			    const struct listen_entry *b)
{
	const char *ha = a->forward->listen_host, *hb = b->forward->listen_host;
	const struct tunnel_config *ta = &c->tunnels[a->tunnel], *tb = &c->tunnels[b->tunnel];

	if (strcmp(ha, hb) != 0 && !is_wildcard(ha) && !is_wildcard(hb))
		return false;
	if (a->forward->kind == FORWARD_LOCAL)
		return true;
	/* Remote listeners only collide on the same server; a missing host (already reported)
	 * is no server at all. */
	return ta->port == tb->port && ta->host && tb->host && strcmp(ta->host, tb->host) == 0;
}

static void check_listen_conflicts(struct loader *l, enum forward_kind kind)
{
	const struct config *c = l->config;
	struct listen_entry *entries = NULL;
	size_t n = 0;

	for (size_t t = 0; t < c->n_tunnels; t++) {
		for (size_t f = 0; f < c->tunnels[t].n_forwards; f++) {
			if (c->tunnels[t].forwards[f].kind != kind)
				continue;
			struct listen_entry *grown = array_grow(entries, n, sizeof(*grown));

			if (!grown) {
				l->out_of_memory = true;
				free(entries);
				return;
			}
			entries = grown;
			entries[n] = (struct listen_entry){
			    .forward = &c->tunnels[t].forwards[f],
			    .tunnel = t,
			    .at = l->tunnel_states[t].items[f],
			    .seq = n,
			};
			n++;
		}
	}
	if (n > 0)
		qsort(entries, n, sizeof(*entries), listen_entry_compare);
	for (size_t group = 0; group < n;) {
		size_t end = group + 1;

		while (end < n &&
		       entries[end].forward->listen_port == entries[group].forward->listen_port)
			end++;
		for (size_t j = group + 1; j < end; j++) {
			for (size_t i = group; i < j; i++) {
				char address[300];

				if (!listen_conflict(c, &entries[i], &entries[j]))
					continue;
				fwdspec_format_listen(entries[j].forward, address, sizeof(address));
				loader_error(l, entries[j].at,
					     "%slisten address %s already used by tunnel '%s' "
					     "(%s:%u)",
					     kind == FORWARD_REMOTE ? "remote " : "", address,
					     c->tunnels[entries[i].tunnel].name,
					     loader_file(l, entries[i].at), entries[i].at.line);
				break;
			}
		}
		group = end;
	}
	free(entries);
}

static void validate_alert(struct loader *l, size_t i)
{
	const enum config_section sec = CONFIG_SECTION_ALERT;
	const struct alert_config *a = &l->config->alerts[i];
	const struct section_state *s = &l->alert_states[i];
	bool url = section_key_given(s, sec, "url"), exec = section_key_given(s, sec, "exec");

	if (url && exec)
		loader_error(l, s->at, "both url and exec in [alert:%s] (use exactly one)",
			     a->name);
	else if (!url && !exec)
		loader_error(l, s->at, "missing url or exec in [alert:%s]", a->name);
	if (exec && !url) {
		if (section_key_given(s, sec, "format"))
			loader_error(l, section_key_where(s, sec, "format"),
				     "format is only used with url");
		if (section_key_given(s, sec, "header"))
			loader_error(l, section_key_where(s, sec, "header"),
				     "header is only used with url");
	}
	if (a->exec) {
		struct stat st;

		if (stat(a->exec, &st) < 0)
			loader_error(l, section_key_where(s, sec, "exec"), "exec %s: %s", a->exec,
				     strerror(errno));
		else if (!S_ISREG(st.st_mode))
			loader_error(l, section_key_where(s, sec, "exec"), "exec %s: not a regular file",
				     a->exec);
		else if (access(a->exec, X_OK) < 0)
			loader_error(l, section_key_where(s, sec, "exec"), "exec %s is not executable",
				     a->exec);
	}
	for (size_t j = 0; j < a->n_tunnels; j++)
		if (!config_find_tunnel(l->config, a->tunnels[j]))
			loader_error(l, s->items[j], "unknown tunnel '%s' in tunnels of [alert:%s]",
				     a->tunnels[j], a->name);
}

static void validate_group(struct loader *l)
{
	const struct config *c = l->config;
	struct group grp, *found = NULL;
	char buf[4096];

	/* A numeric gid needs no group entry. */
	if (!c->control_group || strspn(c->control_group, "0123456789") == strlen(c->control_group))
		return;
	if (getgrnam_r(c->control_group, &grp, buf, sizeof(buf), &found) != 0 || !found)
		loader_error(l,
			     section_key_where(&l->moletun_state, CONFIG_SECTION_MOLETUN, "control_group"),
			     "unknown group '%s' for control_group", c->control_group);
}

/*
 * node_exporter serves whatever file is at metrics_textfile. In a directory every user may
 * write to, another user can replace the file moletun wrote or, with the sticky bit (as
 * /tmp), put one there first that moletun then cannot replace: the metrics would say
 * what that user wants. A directory that does not exist yet is fine: the daemon logs its
 * failed writes until it does.
 */
static void validate_metrics_textfile(struct loader *l)
{
	const char *path = l->config->metrics_textfile;
	struct where at;
	struct stat st;
	char *dir;

	if (!path)
		return;
	dir = loader_dir_of(path);
	if (!dir) {
		l->out_of_memory = true;
		return;
	}
	at = section_key_where(&l->moletun_state, CONFIG_SECTION_MOLETUN, "metrics_textfile");
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & S_IWOTH)) {
		bool sticky = st.st_mode & S_ISVTX;

		loader_error(l, at,
			     "metrics_textfile %s: directory %s is writable by every user (mode "
			     "%04o%s): %s; use a directory only moletun and root may write, such "
			     "as /var/lib/prometheus/node-exporter",
			     path, dir, (unsigned)(st.st_mode & 07777),
			     sticky ? ", sticky like /tmp" : "",
			     sticky ? "a file another user puts there first cannot be replaced "
				      "by moletun, and node_exporter would serve it"
				    : "another user can replace the file node_exporter serves");
	}
	free(dir);
}

void loader_validate(struct loader *l)
{
	loader_resolve_ssh_hosts(l);
	for (size_t i = 0; i < l->config->n_tunnels; i++)
		validate_tunnel(l, i);
	check_listen_conflicts(l, FORWARD_LOCAL);
	check_listen_conflicts(l, FORWARD_REMOTE);
	for (size_t i = 0; i < l->config->n_alerts; i++)
		validate_alert(l, i);
	validate_group(l);
	validate_metrics_textfile(l);
}

void config_warnings(const struct config *c, struct diag *out)
{
	if (c->n_tunnels == 0)
		diag_add(out, c->path, 0, "no tunnels configured");
	for (size_t i = 0; i < c->n_tunnels; i++) {
		const struct tunnel_config *t = &c->tunnels[i];

		if (t->strict_host_key_checking == HOST_KEY_NO)
			diag_add(out, t->file, t->line,
				 "tunnel '%s' does not check the server's host key "
				 "(strict_host_key_checking = no): anyone on the path can "
				 "impersonate it",
				 t->name);
		for (size_t f = 0; f < t->n_forwards; f++) {
			char listen[300];

			if (t->forwards[f].kind != FORWARD_LOCAL ||
			    !is_wildcard(t->forwards[f].listen_host))
				continue;
			fwdspec_format_listen(&t->forwards[f], listen, sizeof(listen));
			diag_add(out, t->file, t->line,
				 "tunnel '%s' listens on every address (%s): anyone who can "
				 "reach this machine can use the forward",
				 t->name, listen);
		}
	}
}
