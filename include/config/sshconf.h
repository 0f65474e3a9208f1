#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What `ssh -G -v [-F FILE] ALIAS` says about a host alias: OpenSSH evaluates its own
 * configuration (Host, Match, Include, wildcards, tokens, first value wins) and prints the
 * result, one "keyword value" line per option on stdout; -v adds on stderr which Host
 * lines applied and which Match exec commands ran. Pure: the text in, the facts out.
 */

#define SSHCONF_FILES_MAX    32	 /* identityfile lines kept */
#define SSHCONF_FORWARDS_MAX 256 /* localforward + remoteforward lines kept */

struct sshconf {
	char *hostname;
	char *user;
	uint16_t port;	       /* 0 when not printed */
	char **identity_files; /* in order, as printed ("~/.ssh/id_ed25519") */
	size_t n_identity_files;
	char *known_hosts_file;	  /* the first of userknownhostsfile, NULL if none */
	char *strict_host_key;	  /* stricthostkeychecking as printed: true, false, ask, ... */
	char *proxy_jump;	  /* NULL: none */
	char *proxy_command;	  /* NULL: none */
	char *certificate_file;	  /* the first certificatefile, NULL if none */
	unsigned connect_timeout; /* seconds, 0: none */
	unsigned alive_interval;  /* serveraliveinterval, seconds, 0: off */
	unsigned alive_count_max; /* serveralivecountmax */
	/* localforward / remoteforward rewritten in moletun's syntax ("15432 127.0.0.1:5432":
	 * ssh -G brackets every host, moletun only IPv6 addresses) */
	char **local_forwards;
	size_t n_local_forwards;
	char **remote_forwards;
	size_t n_remote_forwards;
	/* from -v on stderr */
	bool host_matched; /* a Host line with a pattern other than "*" applied */
	bool match_exec;   /* a Match exec command was run */
	char *message;	   /* the first stderr line that is not -v output, NULL if none */
};

/*
 * Parses ssh -G's stdout `out` and stderr `err` (NUL-terminated). Unknown keywords are
 * skipped; repeated ones past the limits above are dropped. Returns 0 or -ENOMEM (*ret
 * then freed); *ret is cleared first.
 */
int sshconf_parse(const char *out, const char *err, struct sshconf *ret);
void sshconf_free(struct sshconf *c);

/*
 * ssh -G answers for any name, a mistyped alias included, as if it were a host name. The
 * rule used here: `alias` is known when its hostname differs from it (case aside), or a
 * Host line with a pattern other than a bare "*" applied to it.
 */
bool sshconf_alias_known(const struct sshconf *c, const char *alias);

/* stricthostkeychecking as moletun's strict_host_key_checking ("ask", which needs a
 * terminal, as yes); NULL for a value it does not know. */
const char *sshconf_host_key_policy(const struct sshconf *c);
