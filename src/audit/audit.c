#include "audit.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "authorize.h"
#include "textenc.h"

#define KEY_LINE       "key line: "
#define AUTHORIZE_HINT " (moletun authorize prints it)"

void audit_report_init(struct audit_report *r)
{
	memset(r, 0, sizeof(*r));
}

void audit_report_finish(struct audit_report *r)
{
	free(r->items);
	memset(r, 0, sizeof(*r));
}

void audit_add(struct audit_report *r, const char *check, const char *subject,
	       enum audit_result result, enum audit_fix_in fix_in, const char *fix, const char *fmt,
	       ...)
{
	struct audit_finding *f;
	va_list ap;

	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		struct audit_finding *p = realloc(r->items, cap * sizeof(*p));

		if (!p) {
			r->out_of_memory = true;
			return;
		}
		r->items = p;
		r->cap = cap;
	}
	f = &r->items[r->n++];
	memset(f, 0, sizeof(*f));
	f->check = check;
	snprintf(f->subject, sizeof(f->subject), "%s", subject ? subject : "");
	f->result = result;
	f->fix_in = result == AUDIT_PASS ? AUDIT_FIX_NONE : fix_in;
	snprintf(f->fix, sizeof(f->fix), "%s", result == AUDIT_PASS || !fix ? "" : fix);
	va_start(ap, fmt);
	vsnprintf(f->detail, sizeof(f->detail), fmt, ap);
	va_end(ap);
}

enum audit_open audit_open_from_message(const char *message)
{
	if (!message)
		return AUDIT_OPEN_OTHER;
	if (strstr(message, "(administratively prohibited)"))
		return AUDIT_OPEN_PROHIBITED;
	if (strstr(message, "(connect failed)"))
		return AUDIT_OPEN_CONNECT_FAILED;
	if (strstr(message, "(unknown channel type)"))
		return AUDIT_OPEN_UNKNOWN_TYPE;
	return AUDIT_OPEN_OTHER;
}

const char *audit_open_str(enum audit_open o)
{
	switch (o) {
	case AUDIT_OPENED:
		return "opened";
	case AUDIT_OPEN_PROHIBITED:
		return "administratively prohibited";
	case AUDIT_OPEN_CONNECT_FAILED:
		return "connect failed";
	case AUDIT_OPEN_UNKNOWN_TYPE:
		return "unknown channel type";
	case AUDIT_OPEN_OTHER:
		break;
	}
	return "refused";
}

static bool has_prefix(const char *name, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && memcmp(name, prefix, n) == 0;
}

/* Names of a list that `weak` picks, comma-separated into buf; how many. */
static size_t pick(const char *list, bool (*weak)(const char *name, size_t len), char *buf,
		   size_t size, size_t *ret_total)
{
	const char *cursor = list, *name;
	size_t len, n = 0, used = 0;

	*ret_total = 0;
	buf[0] = '\0';
	while (kexinit_next_name(&cursor, &name, &len)) {
		/* RFC 8308 and OpenSSH's strict kex are markers, not algorithms */
		if (has_prefix(name, len, "ext-info-") || has_prefix(name, len, "kex-strict-"))
			continue;
		(*ret_total)++;
		if (!weak(name, len))
			continue;
		if (used + len + 2 < size) {
			used += (size_t)snprintf(buf + used, size - used, "%s%.*s", used ? "," : "",
						 (int)len, name);
		}
		n++;
	}
	return n;
}

static bool contains(const char *name, size_t len, const char *part)
{
	size_t n = strlen(part);

	for (size_t i = 0; i + n <= len; i++)
		if (memcmp(name + i, part, n) == 0)
			return true;
	return false;
}

static bool is(const char *name, size_t len, const char *what)
{
	return len == strlen(what) && memcmp(name, what, len) == 0;
}

/* diffie-hellman-group1-sha1, -group14-sha1, -group-exchange-sha1, gss-*-sha1-*. */
static bool weak_kex(const char *name, size_t len)
{
	return contains(name, len, "sha1");
}

/* CBC modes (and rijndael-cbc@lysator.liu.se), and what is broken outright. */
static bool weak_cipher(const char *name, size_t len)
{
	return contains(name, len, "-cbc") || has_prefix(name, len, "arcfour") ||
	       has_prefix(name, len, "blowfish") || has_prefix(name, len, "cast128") ||
	       has_prefix(name, len, "3des") || is(name, len, "none");
}

/* hmac-sha1, hmac-sha1-96, hmac-sha1-etm@openssh.com, hmac-md5..., none. */
static bool weak_mac(const char *name, size_t len)
{
	return has_prefix(name, len, "hmac-sha1") || has_prefix(name, len, "hmac-md5") ||
	       is(name, len, "none");
}

/* ssh-rsa signs with SHA-1 (rsa-sha2-256/512 use the same keys without it); DSA too. */
static bool weak_signature(const char *name, size_t len)
{
	return is(name, len, "ssh-rsa") || is(name, len, "ssh-rsa-cert-v01@openssh.com") ||
	       has_prefix(name, len, "ssh-dss");
}

/* Concatenates the two directions' lists. */
static char *both(const struct kexinit *k, enum kexinit_list a, enum kexinit_list b)
{
	size_t la = strlen(k->lists[a]), lb = strlen(k->lists[b]);
	char *s = malloc(la + lb + 2);

	if (!s)
		return NULL;
	memcpy(s, k->lists[a], la);
	s[la] = ',';
	memcpy(s + la + 1, k->lists[b], lb + 1);
	return s;
}

static bool has_name(const char *list, const char *name, size_t len)
{
	const char *cursor = list, *n;
	size_t l;

	while (kexinit_next_name(&cursor, &n, &l))
		if (l == len && memcmp(n, name, len) == 0)
			return true;
	return false;
}

/* A copy of a comma-separated list with each name once, in first-seen order; NULL when
 * out of memory. */
static char *unique(const char *list)
{
	const char *cursor = list, *name;
	char *out = malloc(strlen(list) + 1);
	size_t len, used = 0;

	if (!out)
		return NULL;
	out[0] = '\0';
	while (kexinit_next_name(&cursor, &name, &len)) {
		if (has_name(out, name, len))
			continue;
		if (used)
			out[used++] = ',';
		memcpy(out + used, name, len);
		used += len;
		out[used] = '\0';
	}
	return out;
}

static void judge_list(struct audit_report *r, const char *check, const char *offered,
		       bool (*weak)(const char *, size_t), const char *what, const char *keyword)
{
	char found[400], fix[450], *list = unique(offered);
	size_t total, n;

	if (!list) {
		r->out_of_memory = true;
		return;
	}
	n = pick(list, weak, found, sizeof(found), &total);
	free(list);
	if (n == 0) {
		audit_add(r, check, NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "no %s among the %zu offered", what, total);
		return;
	}
	/* OpenSSH >= 7.5 removes names from its defaults with a leading '-' */
	snprintf(fix, sizeof(fix), "sshd_config: %s -%s", keyword, found);
	audit_add(r, check, NULL, AUDIT_FAIL, AUDIT_FIX_SSHD_CONFIG, fix, "%s offered: %s", what,
		  found);
}

void audit_judge_algorithms(struct audit_report *r, const struct kexinit *k)
{
	char *ciphers = both(k, KEXINIT_CIPHER_C2S, KEXINIT_CIPHER_S2C);
	char *macs = both(k, KEXINIT_MAC_C2S, KEXINIT_MAC_S2C);

	judge_list(r, "algorithms.kex", k->lists[KEXINIT_KEX], weak_kex, "SHA-1 key exchange",
		   "KexAlgorithms");
	if (ciphers)
		judge_list(r, "algorithms.ciphers", ciphers, weak_cipher, "CBC or broken cipher",
			   "Ciphers");
	if (macs)
		judge_list(r, "algorithms.macs", macs, weak_mac, "SHA-1 or MD5 MAC", "MACs");
	judge_list(r, "algorithms.host_key", k->lists[KEXINIT_HOSTKEY], weak_signature,
		   "SHA-1 signature (ssh-rsa) or DSA", "HostKeyAlgorithms");
	if (!ciphers || !macs)
		r->out_of_memory = true;
	free(ciphers);
	free(macs);
}

void audit_judge_host_key(struct audit_report *r, const char *description, bool verified)
{
	if (strncmp(description, "ssh-dss", 7) == 0)
		audit_add(r, "host_key", NULL, AUDIT_FAIL, AUDIT_FIX_SSHD_CONFIG,
			  "sshd_config: HostKey an ed25519 key (ssh-keygen -t ed25519)", "%s",
			  description);
	else if (!verified)
		audit_add(r, "host_key", NULL, AUDIT_WARN, AUDIT_FIX_MOLETUN_CONF,
			  "moletun.conf: strict_host_key_checking = yes, with the key in "
			  "known_hosts_file (ssh-keyscan it, then compare ssh-keygen -lf with the "
			  "sidecar's own)",
			  "%s, not verified against known_hosts", description);
	else
		audit_add(r, "host_key", NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "%s, verified against known_hosts", description);
}

void audit_judge_auth_methods(struct audit_report *r, const char *methods)
{
	static const char fix[] = "sshd_config: AuthenticationMethods publickey";

	if (!methods)
		audit_add(r, "auth_methods", NULL, AUDIT_FAIL, AUDIT_FIX_SSHD_CONFIG,
			  "sshd_config: AuthenticationMethods publickey, PermitEmptyPasswords no",
			  "the server let the user in without authenticating (\"none\")");
	else if (strcmp(methods, "publickey") == 0)
		audit_add(r, "auth_methods", NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "offered after \"none\": publickey");
	else
		audit_add(r, "auth_methods", NULL, AUDIT_FAIL, AUDIT_FIX_SSHD_CONFIG, fix,
			  "offered after \"none\": %s (public keys only is the rule)", methods);
}

static const char session_fix[] = "sshd_config: MaxSessions 0 (refuses session channels)";

void audit_judge_session(struct audit_report *r, const struct audit_session *s)
{
	char how[260];

	if (!s->opened) {
		audit_add(r, "session", NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "session channel refused");
		return;
	}
	if (s->marker_seen) {
		audit_add(r, "session", NULL, AUDIT_FAIL, AUDIT_FIX_KEY,
			  KEY_LINE "restrict,command=\"" AUTHORIZE_COMMAND "\"" AUTHORIZE_HINT
				   "; or sshd_config: ForceCommand " AUTHORIZE_COMMAND
				   " and MaxSessions 0",
			  "a session channel opened and a shell ran the probe's command: the key "
			  "can run any command");
		return;
	}
	if (!s->exec_accepted) {
		audit_add(r, "session", NULL, AUDIT_WARN, AUDIT_FIX_SSHD_CONFIG, session_fix,
			  "a session channel opened; the command request was refused");
		return;
	}
	if (!s->ended)
		snprintf(how, sizeof(how), "did not end within the time given");
	else if (s->exit_status >= 0)
		snprintf(how, sizeof(how), "exit status %d", s->exit_status);
	else
		snprintf(how, sizeof(how), "no exit status");
	audit_add(
	    r, "session", NULL, AUDIT_WARN, AUDIT_FIX_SSHD_CONFIG, session_fix,
	    "a session channel opened; a forced command ran instead of the probe's (%s%s%s%s)", how,
	    s->output[0] ? ", printed \"" : "", s->output, s->output[0] ? "\"" : "");
}

void audit_judge_pty(struct audit_report *r, enum audit_pty p)
{
	switch (p) {
	case AUDIT_PTY_NO_SESSION:
		audit_add(r, "pty", NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "no session channel to ask on");
		break;
	case AUDIT_PTY_REFUSED:
		audit_add(r, "pty", NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL, "pty request refused");
		break;
	case AUDIT_PTY_GRANTED:
		audit_add(r, "pty", NULL, AUDIT_FAIL, AUDIT_FIX_KEY,
			  KEY_LINE "restrict (no pty)" AUTHORIZE_HINT
				   "; or sshd_config: PermitTTY no",
			  "a pty was granted");
		break;
	}
}

void audit_judge_sftp(struct audit_report *r, enum audit_sftp s)
{
	switch (s) {
	case AUDIT_SFTP_NO_SESSION:
		audit_add(r, "sftp", NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "no session channel to ask on");
		break;
	case AUDIT_SFTP_REFUSED:
		audit_add(r, "sftp", NULL, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "no SFTP server answered");
		break;
	case AUDIT_SFTP_ANSWERED:
		audit_add(r, "sftp", NULL, AUDIT_FAIL, AUDIT_FIX_KEY,
			  KEY_LINE "command=\"" AUTHORIZE_COMMAND "\"" AUTHORIZE_HINT
				   "; or sshd_config: ForceCommand " AUTHORIZE_COMMAND
				   " (forced commands replace subsystems too)",
			  "an SFTP server answered: the key can read and write files (closed after "
			  "its version)");
		break;
	}
}

static const char forwarding_fix[] = KEY_LINE "permitopen=\"TARGET\" for each target" AUTHORIZE_HINT
					      "; or sshd_config: PermitOpen TARGET...";

void audit_judge_direct_tcpip(struct audit_report *r, const char *dest, enum audit_open o)
{
	switch (o) {
	case AUDIT_OPEN_PROHIBITED:
	case AUDIT_OPEN_UNKNOWN_TYPE:
		audit_add(r, "direct_tcpip", dest, AUDIT_PASS, AUDIT_FIX_NONE, NULL, "refused (%s)",
			  audit_open_str(o));
		break;
	case AUDIT_OPEN_CONNECT_FAILED:
		audit_add(r, "direct_tcpip", dest, AUDIT_FAIL, AUDIT_FIX_KEY, forwarding_fix,
			  "not restricted: the sidecar tried to connect (connect failed)");
		break;
	case AUDIT_OPENED:
		audit_add(r, "direct_tcpip", dest, AUDIT_FAIL, AUDIT_FIX_KEY, forwarding_fix,
			  "not restricted: the channel opened (closed at once, nothing sent)");
		break;
	case AUDIT_OPEN_OTHER:
		audit_add(r, "direct_tcpip", dest, AUDIT_WARN, AUDIT_FIX_KEY, forwarding_fix,
			  "refused without saying why: restriction not proven");
		break;
	}
}

enum audit_forwarding audit_forwarding_of(const enum audit_open *non_targets, size_t n)
{
	enum audit_forwarding f = n ? AUDIT_FORWARDING_RESTRICTED : AUDIT_FORWARDING_UNKNOWN;

	for (size_t i = 0; i < n; i++) {
		if (non_targets[i] == AUDIT_OPENED || non_targets[i] == AUDIT_OPEN_CONNECT_FAILED)
			return AUDIT_FORWARDING_UNRESTRICTED;
		if (non_targets[i] == AUDIT_OPEN_OTHER)
			f = AUDIT_FORWARDING_UNKNOWN;
	}
	return f;
}

void audit_judge_target(struct audit_report *r, const char *dest, enum audit_open o)
{
	char fix[400];

	switch (o) {
	case AUDIT_OPENED:
		audit_add(r, "target", dest, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "opens (closed at once, nothing sent)");
		break;
	case AUDIT_OPEN_PROHIBITED:
		snprintf(fix, sizeof(fix),
			 KEY_LINE "permitopen=\"%s\"" AUTHORIZE_HINT
				  "; and sshd_config: PermitOpen must name it when set",
			 dest);
		audit_add(r, "target", dest, AUDIT_FAIL, AUDIT_FIX_KEY, fix,
			  "refused (administratively prohibited): the tunnel cannot reach its own "
			  "target");
		break;
	case AUDIT_OPEN_CONNECT_FAILED:
		audit_add(r, "target", dest, AUDIT_WARN, AUDIT_FIX_NONE, NULL,
			  "permitted, but the sidecar could not connect to it: is it up?");
		break;
	case AUDIT_OPEN_UNKNOWN_TYPE:
	case AUDIT_OPEN_OTHER:
		audit_add(r, "target", dest, AUDIT_WARN, AUDIT_FIX_NONE, NULL, "refused (%s)",
			  audit_open_str(o));
		break;
	}
}

static const char streamlocal_fix[] = KEY_LINE "any permitopen forbids Unix sockets" AUTHORIZE_HINT
					       "; or sshd_config: AllowStreamLocalForwarding no";

void audit_judge_streamlocal(struct audit_report *r, const char *path, enum audit_open o,
			     enum audit_forwarding forwarding)
{
	if (o == AUDIT_OPENED) {
		audit_add(
		    r, "direct_streamlocal", path, AUDIT_FAIL, AUDIT_FIX_KEY, streamlocal_fix,
		    "opened: the key reaches this Unix socket on the sidecar (closed at once, "
		    "nothing sent)");
		return;
	}
	switch (forwarding) {
	case AUDIT_FORWARDING_RESTRICTED:
		audit_add(r, "direct_streamlocal", path, AUDIT_PASS, AUDIT_FIX_NONE, NULL,
			  "refused; forwarding is limited to listed destinations, which no socket "
			  "matches");
		break;
	case AUDIT_FORWARDING_UNRESTRICTED:
	case AUDIT_FORWARDING_UNKNOWN:
		audit_add(r, "direct_streamlocal", path, AUDIT_WARN, AUDIT_FIX_KEY, streamlocal_fix,
			  "refused (%s), which sshd also answers when nothing listens there; with "
			  "forwarding not restricted, sshd forwards to any socket unless "
			  "AllowStreamLocalForwarding is no",
			  audit_open_str(o));
		break;
	}
}

void audit_judge_tcpip_forward(struct audit_report *r, const char *listen, bool granted,
			       unsigned bound_port, size_t n_remote_forwards)
{
	const char *fix = n_remote_forwards ? KEY_LINE
			      "permitlisten=\"LISTEN\" for each remote_forward" AUTHORIZE_HINT
			      "; or sshd_config: PermitListen LISTEN..."
					    : KEY_LINE
			      "a permitlisten that matches nothing" AUTHORIZE_HINT
			      "; or sshd_config: AllowTcpForwarding local";

	if (!granted)
		audit_add(r, "tcpip_forward", listen, AUDIT_PASS, AUDIT_FIX_NONE, NULL, "refused");
	else
		audit_add(
		    r, "tcpip_forward", listen, AUDIT_FAIL, AUDIT_FIX_KEY, fix,
		    "granted: the sidecar listened on port %u for the key (cancelled at once); "
		    "the tunnel %s",
		    bound_port,
		    n_remote_forwards ? "asks only for its remote_forward listens"
				      : "has no remote_forward");
}

void audit_note_streamlocal_forward(struct audit_report *r)
{
	audit_add(r, "streamlocal_forward", NULL, AUDIT_SKIP, AUDIT_FIX_SSHD_CONFIG,
		  "sshd_config: AllowStreamLocalForwarding no (or local)",
		  "not probed (libssh2 1.10 cannot send streamlocal-forward@openssh.com); no key "
		  "option stops remote Unix-socket listens, OpenSSH checks neither permitopen nor "
		  "permitlisten for them");
}

enum audit_result audit_report_worst(const struct audit_report *r)
{
	enum audit_result worst = AUDIT_PASS;

	for (size_t i = 0; i < r->n; i++) {
		if (r->items[i].result == AUDIT_FAIL)
			return AUDIT_FAIL;
		if (r->items[i].result == AUDIT_WARN)
			worst = AUDIT_WARN;
	}
	return worst;
}

const char *audit_result_str(enum audit_result result)
{
	switch (result) {
	case AUDIT_PASS:
		return "pass";
	case AUDIT_WARN:
		return "warn";
	case AUDIT_FAIL:
		return "fail";
	case AUDIT_SKIP:
		return "skip";
	}
	return "?";
}

const char *audit_fix_in_str(enum audit_fix_in fix_in)
{
	switch (fix_in) {
	case AUDIT_FIX_KEY:
		return "authorized_keys";
	case AUDIT_FIX_SSHD_CONFIG:
		return "sshd_config";
	case AUDIT_FIX_MOLETUN_CONF:
		return "moletun.conf";
	case AUDIT_FIX_NONE:
		break;
	}
	return NULL;
}

#define CHECK_WIDTH 40

/* Text for a terminal: a control character (from a path given on the command line, say)
 * becomes '?'. */
static void put_printable(FILE *out, const char *s)
{
	for (; *s; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static int name_pad(const char *name)
{
	size_t n = strlen(name);

	return n < CHECK_WIDTH ? (int)(CHECK_WIDTH - n) : 0;
}

void audit_report_print_text(const struct audit_report *r, FILE *out)
{
	fprintf(out, "%-*s %-6s %s\n", CHECK_WIDTH, "CHECK", "RESULT", "DETAIL / FIX");
	for (size_t i = 0; i < r->n; i++) {
		const struct audit_finding *f = &r->items[i];
		char name[sizeof(f->subject) + 64];

		snprintf(name, sizeof(name), "%s%s%s", f->check, f->subject[0] ? " " : "",
			 f->subject);
		put_printable(out, name);
		fprintf(out, "%*s %-6s ", name_pad(name), "", audit_result_str(f->result));
		put_printable(out, f->detail);
		if (f->fix[0]) {
			fputs(" | fix: ", out);
			put_printable(out, f->fix);
		}
		fputc('\n', out);
	}
}

static void json_string(FILE *out, const char *s, size_t max)
{
	fputc('"', out);
	text_put_escaped(out, s, max, TEXT_ESCAPE_JSON);
	fputc('"', out);
}

void audit_report_print_json(const struct audit_report *r, FILE *out)
{
	fputc('[', out);
	for (size_t i = 0; i < r->n; i++) {
		const struct audit_finding *f = &r->items[i];
		const char *fix_in = audit_fix_in_str(f->fix_in);

		fputs(i ? ",{\"check\":" : "{\"check\":", out);
		json_string(out, f->check, 64);
		fputs(",\"subject\":", out);
		if (f->subject[0])
			json_string(out, f->subject, sizeof(f->subject));
		else
			fputs("null", out);
		fprintf(out, ",\"result\":\"%s\",\"detail\":", audit_result_str(f->result));
		json_string(out, f->detail, sizeof(f->detail));
		fputs(",\"fix_in\":", out);
		if (fix_in)
			json_string(out, fix_in, 32);
		else
			fputs("null", out);
		fputs(",\"fix\":", out);
		if (f->fix[0])
			json_string(out, f->fix, sizeof(f->fix));
		else
			fputs("null", out);
		fputc('}', out);
	}
	fputc(']', out);
}
