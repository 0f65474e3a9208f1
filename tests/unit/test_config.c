#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "jumpspec.h"
#include "fwdspec.h"
#include "config_table.h"

/* Fixtures live in a fresh temporary directory per test, so that modes can be set. */
static char dir[PATH_MAX];

#define KEY_TEXT                                                                                   \
	"-----BEGIN OPENSSH PRIVATE KEY-----\n"                                                    \
	"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"                 \
	"-----END OPENSSH PRIVATE KEY-----\n"
/* KEY_TEXT with its last base64 character changed: same size, other contents. */
#define ROTATED_KEY_TEXT                                                                           \
	"-----BEGIN OPENSSH PRIVATE KEY-----\n"                                                    \
	"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZX\n"                 \
	"-----END OPENSSH PRIVATE KEY-----\n"
#define KNOWN_HOSTS_TEXT "db.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG\n"
#define ENCRYPTED_KEY_TEXT                                                                         \
	"-----BEGIN OPENSSH PRIVATE KEY-----\n"                                                    \
	"b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABATogKIhg\n"                 \
	"-----END OPENSSH PRIVATE KEY-----\n"

/* A tunnel that is valid once a forward is added. */
#define TUNNEL_BODY                                                                                \
	"host = db.example.com\n"                                                                  \
	"user = tunnel\n"                                                                          \
	"identity_file = id\n"                                                                     \
	"known_hosts_file = known_hosts\n"

static char *path_of(const char *name)
{
	static char buf[2][PATH_MAX];
	static int turn;

	turn = !turn;
	if ((size_t)snprintf(buf[turn], sizeof(buf[turn]), "%s/%s", dir, name) >= sizeof(buf[turn]))
		fail_msg("path too long: %s", name);
	return buf[turn];
}

static void write_file(const char *name, mode_t mode, const char *text)
{
	char *path = path_of(name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void make_dir(const char *name)
{
	assert_int_equal(mkdir(path_of(name), 0755), 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/moletun-test-config.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	write_file("id", 0600, KEY_TEXT);
	write_file("id_open", 0644, KEY_TEXT);
	write_file("id_encrypted", 0600, ENCRYPTED_KEY_TEXT);
	write_file("id.pub", 0600, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG test\n");
	write_file("not_a_key", 0600, "hello\n");
	write_file("pass", 0600, "secret\n");
	write_file("pass_open", 0640, "secret\n");
	write_file("known_hosts", 0644, KNOWN_HOSTS_TEXT);
	write_file("hook", 0755, "#!/bin/sh\nexit 0\n");
	write_file("not_executable", 0644, "#!/bin/sh\nexit 0\n");
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	(void)state;
	return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Replaces every "@DIR@" with the fixture directory. */
static char *expand(const char *text)
{
	static char buf[4096];
	size_t used = 0;

	while (*text && used + 1 < sizeof(buf)) {
		if (strncmp(text, "@DIR@", 5) == 0) {
			used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s", dir);
			text += 5;
		} else {
			buf[used++] = *text++;
		}
	}
	buf[used] = '\0';
	return buf;
}

static void print_diags(const struct diag *d)
{
	for (size_t i = 0; i < d->count; i++)
		print_message("  diag[%zu] = %s\n", i, d->messages[i]);
}

/* Loads `name` and checks the diagnostics, in order, against NULL-terminated `expected`. */
static int load_expect(const char *name, struct config **ret, const char *const *expected)
{
	struct diag d;
	size_t n = 0;
	int r;

	diag_init(&d);
	r = config_load(path_of(name), ret, &d);
	while (expected[n])
		n++;
	if (d.count != n)
		print_diags(&d);
	assert_int_equal(d.count, n);
	for (size_t i = 0; i < n; i++) {
		char *want = expand(expected[i]);

		if (strcmp(d.messages[i], want) != 0)
			print_diags(&d);
		assert_string_equal(d.messages[i], want);
	}
	diag_finish(&d);
	return r;
}

static struct config *load_ok(const char *name)
{
	static const char *const none[] = {NULL};
	struct config *c = NULL;

	assert_int_equal(load_expect(name, &c, none), 0);
	assert_non_null(c);
	return c;
}

static void load_fails(const char *name, const char *const *expected)
{
	struct config *c = NULL;

	assert_int_equal(load_expect(name, &c, expected), -EINVAL);
	assert_null(c);
}

#define EXPECT(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void **state)
{
	struct config *c;
	const struct tunnel_config *t;

	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:primary]\n" TUNNEL_BODY
		   "local_forward = 127.0.0.1:5433 pg_main:5432\n");
	c = load_ok("m.conf");
	assert_string_equal(c->path, path_of("m.conf"));
	assert_string_equal(c->control_socket, "/run/moletun/control.sock");
	assert_null(c->control_group);
	assert_int_equal(c->log_level, LOG_INFO);
	assert_null(c->metrics_textfile);
	assert_int_equal(c->metrics_interval_ms, 15000);
	assert_int_equal(c->n_alerts, 0);
	assert_int_equal(c->n_tunnels, 1);
	t = &c->tunnels[0];
	assert_string_equal(t->name, "primary");
	assert_string_equal(t->host, "db.example.com");
	assert_int_equal(t->port, 22);
	assert_string_equal(t->user, "tunnel");
	assert_string_equal(t->identity_file, path_of("id"));
	assert_null(t->identity_passphrase_file);
	assert_false(t->use_agent);
	assert_null(t->agent_socket);
	assert_string_equal(t->known_hosts_file, path_of("known_hosts"));
	assert_int_equal(t->strict_host_key_checking, HOST_KEY_STRICT);
	assert_int_equal(t->connect_timeout_ms, 5000);
	assert_int_equal(t->keepalive_interval_ms, 5000);
	assert_int_equal(t->keepalive_count_max, 3);
	assert_int_equal(t->backoff_initial_ms, 100);
	assert_int_equal(t->backoff_max_ms, 1000);
	assert_int_equal(t->auth_retry_interval_ms, 60000);
	assert_int_equal(t->down_hold_ms, 0);
	assert_int_equal(t->max_connections, 1024);
	assert_int_equal(t->audit_interval_ms, 86400000);
	assert_int_equal(t->n_forwards, 1);
	assert_int_equal(t->forwards[0].kind, FORWARD_LOCAL);
	assert_string_equal(t->forwards[0].listen_host, "127.0.0.1");
	assert_int_equal(t->forwards[0].listen_port, 5433);
	assert_string_equal(t->forwards[0].target_host, "pg_main");
	assert_int_equal(t->forwards[0].target_port, 5432);
	assert_string_equal(t->file, path_of("m.conf"));
	assert_int_equal(t->line, 1);
	config_free(c);
}

static void test_every_key(void **state)
{
	struct config *c;
	const struct tunnel_config *t;
	const struct alert_config *a;

	(void)state;
	write_file("m.conf", 0644,
		   "; every key, most not at their defaults\n"
		   "[moletun]\n"
		   "control_socket = /tmp/moletun.sock   ; inline comment\n"
		   "control_group = root\n"
		   "log_level = debug\n"
		   "metrics_textfile = /var/lib/prometheus/node-exporter/moletun.prom\n"
		   "metrics_interval = 250ms\n"
		   "\n"
		   "[tunnel:primary]\n"
		   "host = fd00::1\n"
		   "port = 2222\n"
		   "user = tunnel\n"
		   "identity_file = id\n"
		   "identity_passphrase_file = pass\n"
		   "use_agent = yes\n"
		   "agent_socket = /run/agent.sock\n"
		   "known_hosts_file = missing_known_hosts\n"
		   "strict_host_key_checking = accept-new\n"
		   "local_forward = 127.0.0.1:5433 pg_main:5432\n"
		   "remote_forward = 9000 127.0.0.1:9000\n"
		   "local_forward = [::1]:5434 [fd00::5]:5432\n"
		   "connect_timeout = 1m30s\n"
		   "keepalive_interval = 10s\n"
		   "keepalive_count_max = 7\n"
		   "backoff_initial = 250ms\n"
		   "backoff_max = 30s\n"
		   "auth_retry_interval = 2m\n"
		   "down_hold = 3s\n"
		   "max_connections = 10\n"
		   "\n"
		   "[alert:ops]\n"
		   "url = https://hooks.example.com/services/T0/B0/secret\n"
		   "format = alertmanager\n"
		   "down_after = 1m\n"
		   "tunnels = primary\n"
		   "header = Authorization: Bearer abc\n"
		   "header = X-Team: db\n"
		   "timeout = 2s\n"
		   "send_resolved = no\n"
		   "[alert:page]\n"
		   "exec = hook\n");
	c = load_ok("m.conf");
	assert_string_equal(c->control_socket, "/tmp/moletun.sock");
	assert_string_equal(c->control_group, "root");
	assert_int_equal(c->log_level, LOG_DEBUG);
	assert_string_equal(c->metrics_textfile, "/var/lib/prometheus/node-exporter/moletun.prom");
	assert_int_equal(c->metrics_interval_ms, 250);
	t = &c->tunnels[0];
	assert_string_equal(t->host, "fd00::1");
	assert_int_equal(t->port, 2222);
	assert_string_equal(t->identity_passphrase_file, path_of("pass"));
	assert_true(t->use_agent);
	assert_string_equal(t->agent_socket, "/run/agent.sock");
	assert_int_equal(t->strict_host_key_checking, HOST_KEY_ACCEPT_NEW);
	assert_int_equal(t->n_forwards, 3);
	assert_int_equal(t->forwards[1].kind, FORWARD_REMOTE);
	assert_int_equal(t->forwards[2].listen_port, 5434);
	assert_string_equal(t->forwards[2].target_host, "fd00::5");
	assert_int_equal(t->connect_timeout_ms, 90000);
	assert_int_equal(t->keepalive_interval_ms, 10000);
	assert_int_equal(t->keepalive_count_max, 7);
	assert_int_equal(t->backoff_initial_ms, 250);
	assert_int_equal(t->backoff_max_ms, 30000);
	assert_int_equal(t->auth_retry_interval_ms, 120000);
	assert_int_equal(t->down_hold_ms, 3000);
	assert_int_equal(t->max_connections, 10);
	assert_int_equal(c->n_alerts, 2);
	a = &c->alerts[0];
	assert_string_equal(a->name, "ops");
	assert_string_equal(a->url, "https://hooks.example.com/services/T0/B0/secret");
	assert_null(a->exec);
	assert_int_equal(a->format, ALERT_FORMAT_ALERTMANAGER);
	assert_int_equal(a->down_after_ms, 60000);
	assert_int_equal(a->n_tunnels, 1);
	assert_string_equal(a->tunnels[0], "primary");
	assert_int_equal(a->n_headers, 2);
	assert_string_equal(a->headers[0], "Authorization: Bearer abc");
	assert_string_equal(a->headers[1], "X-Team: db");
	assert_int_equal(a->timeout_ms, 2000);
	assert_false(a->send_resolved);
	assert_int_equal(a->line, 31);
	a = &c->alerts[1];
	assert_null(a->url);
	assert_string_equal(a->exec, path_of("hook"));
	assert_int_equal(a->format, ALERT_FORMAT_JSON);
	assert_int_equal(a->down_after_ms, 5000);
	assert_int_equal(a->timeout_ms, 5000);
	assert_true(a->send_resolved);
	assert_int_equal(a->n_tunnels, 0);
	config_free(c);
}

static void test_missing_file(void **state)
{
	struct config *c = NULL;

	(void)state;
	assert_int_equal(
	    load_expect("nope.conf", &c, EXPECT("@DIR@/nope.conf: No such file or directory")),
	    -ENOENT);
	assert_null(c);
	assert_int_equal(load_expect(".", &c, EXPECT("@DIR@/.: not a regular file")), -EISDIR);
}

static void test_unknown_key_and_section(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "stray = 1\n"
		   "[tunnel:primary]\n" TUNNEL_BODY "local_forward = 5433 db:5432\n"
		   "hots = db\n"
		   "Host = db\n"
		   "[tunnels:x]\n"
		   "anything = goes\n"
		   "[moletun:x]\n"
		   "[tunnel:]\n"
		   "host = x\n"
		   "bogus = 1\n"
		   "[alert]\n"
		   "[tunnel:a b]\n"
		   "[tunnel:primary\n"
		   "[include] extra\n"
		   "[moletun]\n"
		   "hots = 1\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:1: key 'stray' outside of any section",
			  "@DIR@/m.conf:8: unknown key 'hots' in [tunnel:primary]",
			  "@DIR@/m.conf:9: unknown key 'Host' in [tunnel:primary]",
			  "@DIR@/m.conf:10: unknown section [tunnels:x]",
			  "@DIR@/m.conf:12: unknown section [moletun:x]",
			  "@DIR@/m.conf:13: section name missing in [tunnel:] (use [tunnel:NAME])",
			  "@DIR@/m.conf:15: unknown key 'bogus' in [tunnel:]",
			  "@DIR@/m.conf:16: section name missing in [alert] (use [alert:NAME])",
			  "@DIR@/m.conf:17: invalid tunnel name 'a b' (use up to 64 letters, "
			  "digits, '.', '_' or '-')",
			  "@DIR@/m.conf:18: missing ']' in section header",
			  "@DIR@/m.conf:19: unexpected text after section header",
			  "@DIR@/m.conf:21: unknown key 'hots' in [moletun]"));
}

static void test_empty_section_reports_at_header(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "# nothing but a header\n"
		   "\n"
		   "[tunnel:primary]\n"
		   "\n"
		   "[tunnel:second]   ; inline comment\n"
		   "host = b\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:3: missing required key 'host' in [tunnel:primary]",
			  "@DIR@/m.conf:3: missing required key 'user' in [tunnel:primary]",
			  "@DIR@/m.conf:3: no forwards in [tunnel:primary] (add local_forward or "
			  "remote_forward)",
			  "@DIR@/m.conf:3: no authentication in [tunnel:primary] (set "
			  "identity_file or use_agent = yes)",
			  "@DIR@/m.conf:3: known_hosts_file required unless "
			  "strict_host_key_checking = no",
			  "@DIR@/m.conf:5: missing required key 'user' in [tunnel:second]",
			  "@DIR@/m.conf:5: no forwards in [tunnel:second] (add local_forward or "
			  "remote_forward)",
			  "@DIR@/m.conf:5: no authentication in [tunnel:second] (set "
			  "identity_file or use_agent = yes)",
			  "@DIR@/m.conf:5: known_hosts_file required unless "
			  "strict_host_key_checking = no"));
}

/* ssh_host's checks that come before ssh -G runs: the tunnel's other checks are skipped. */
static void test_ssh_host_before_running_ssh(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:a]\n"
		   "ssh_host = -v\n"
		   "[tunnel:b]\n"
		   "ssh_config = cfg\n"
		   "host = h\n"
		   "user = u\n"
		   "use_agent = yes\n"
		   "strict_host_key_checking = no\n"
		   "local_forward = 1 h:2\n"
		   "[tunnel:c]\n"
		   "ssh_host = db\n"
		   "ssh_config = missing_cfg\n"
		   "[tunnel:d]\n"
		   "ssh_host = -oProxyCommand=x\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:2: ssh_host -v: an alias cannot start with '-'",
			  "@DIR@/m.conf:4: ssh_config needs ssh_host",
			  "@DIR@/m.conf:12: ssh_config @DIR@/missing_cfg: No such file or directory",
			  "@DIR@/m.conf:14: invalid host name '-oProxyCommand=x' for ssh_host"));
}

static void test_duplicates(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:primary]\n" TUNNEL_BODY "local_forward = 5433 db:5432\n"
		   "port = 22\n"
		   "port = 2222\n"
		   "[tunnel:primary]\n"
		   "hots = x\n"
		   "port = 0\n"
		   "[alert:ops]\n"
		   "exec = hook\n"
		   "[alert:ops]\n"
		   "exec = hook\n"
		   "[moletun]\n"
		   "log_level = info\n"
		   "[moletun]\n"
		   "log_level = debug\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:8: duplicate key 'port' in [tunnel:primary] (first set at "
			  "@DIR@/m.conf:7)",
			  "@DIR@/m.conf:9: duplicate tunnel name 'primary' (first defined at "
			  "@DIR@/m.conf:1)",
			  "@DIR@/m.conf:10: unknown key 'hots' in [tunnel:primary]",
			  "@DIR@/m.conf:11: invalid port '0' for port (1..65535)",
			  "@DIR@/m.conf:14: duplicate alert name 'ops' (first defined at "
			  "@DIR@/m.conf:12)",
			  "@DIR@/m.conf:19: duplicate key 'log_level' in [moletun] (first set at "
			  "@DIR@/m.conf:17)"));
}

static void test_listen_conflicts(void **state)
{
	struct config *c;

	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 127.0.0.1:5433 db:5432\n"
		   "local_forward = *:6000 db:5432\n"
		   "remote_forward = 9000 localhost:80\n"
		   "[tunnel:b]\n" TUNNEL_BODY "local_forward = 127.0.0.1:5433 db:5432\n"
		   "local_forward = 127.0.0.2:5433 db:5432\n"
		   "local_forward = 10.0.0.1:6000 db:5432\n"
		   "remote_forward = 9000 localhost:80\n"
		   "[tunnel:c]\n"
		   "host = other.example.com\n"
		   "user = u\n"
		   "use_agent = yes\n"
		   "strict_host_key_checking = no\n"
		   "remote_forward = 9000 localhost:80\n"
		   "local_forward = 127.0.0.2:5433 db:5432\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:14: listen address 127.0.0.1:5433 already used "
			  "by tunnel 'a' (@DIR@/m.conf:6)",
			  "@DIR@/m.conf:16: listen address 10.0.0.1:6000 already used by "
			  "tunnel 'a' (@DIR@/m.conf:7)",
			  "@DIR@/m.conf:17: remote listen address 127.0.0.1:9000 already "
			  "used by tunnel 'a' (@DIR@/m.conf:8)",
			  "@DIR@/m.conf:24: listen address 127.0.0.2:5433 already used by "
			  "tunnel 'b' (@DIR@/m.conf:15)"));

	/* The same listen port on different addresses, or remote ports on different servers. */
	write_file("ok.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 127.0.0.1:5433 db:5432\n"
		   "remote_forward = 9000 localhost:80\n"
		   "[tunnel:b]\n" TUNNEL_BODY "local_forward = 127.0.0.2:5433 db:5432\n"
		   "local_forward = [::1]:5433 db:5432\n"
		   "port = 2222\n"
		   "remote_forward = 9000 localhost:80\n");
	c = load_ok("ok.conf");
	config_free(c);
}

static void test_identity_files(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:a]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5001 db:5432\n"
		   "identity_file = id_open\n"
		   "[tunnel:b]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5002 db:5432\n"
		   "identity_file = /nonexistent/id\n"
		   "[tunnel:c]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5003 db:5432\n"
		   "identity_file = id\n"
		   "identity_passphrase_file = pass_open\n"
		   "[tunnel:d]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5004 db:5432\n"
		   "identity_file = id.pub\n"
		   "[tunnel:e]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5005 db:5432\n"
		   "identity_file = not_a_key\n"
		   "[tunnel:f]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5006 db:5432\n"
		   "identity_file = id_encrypted\n"
		   "[tunnel:g]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5007 db:5432\n"
		   "identity_file = .\n"
		   "identity_passphrase_file = ~/pass\n");
	load_fails(
	    "m.conf",
	    EXPECT("@DIR@/m.conf:6: identity file @DIR@/id_open is readable by group or "
		   "others (mode 0644): like OpenSSH, moletun refuses unprotected private "
		   "keys",
		   "@DIR@/m.conf:12: identity file /nonexistent/id: No such file or "
		   "directory",
		   "@DIR@/m.conf:19: identity passphrase file @DIR@/pass_open is readable by "
		   "group or others (mode 0640): like OpenSSH, moletun refuses unprotected "
		   "key passphrases",
		   "@DIR@/m.conf:25: identity file @DIR@/id.pub is a public key: use the "
		   "private key",
		   "@DIR@/m.conf:31: identity file @DIR@/not_a_key is not a private key "
		   "(expected OpenSSH format)",
		   "@DIR@/m.conf:37: identity file @DIR@/id_encrypted is encrypted: set "
		   "identity_passphrase_file",
		   "@DIR@/m.conf:43: identity file @DIR@/.: not a regular file",
		   "@DIR@/m.conf:44: identity_passphrase_file: '~' is not expanded, use an "
		   "absolute path"));
}

/* proxy_jump: hops in order, users filled in, its key files checked like identity_file. */
static void test_proxy_jump(void **state)
{
	const struct tunnel_config *t;
	struct config *c;

	(void)state;
	write_file("j.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		   "proxy_jump = ops@b1.example.com:2201, [fd00::1]\n"
		   "proxy_jump_identity_file = id2\n"
		   "[tunnel:b]\n" TUNNEL_BODY "local_forward = 5002 db:5432\n"
		   "proxy_jump = none\n"
		   "[tunnel:c]\n" TUNNEL_BODY "local_forward = 5003 db:5432\n"
		   "proxy_jump =\n");
	write_file("id2", 0600, KEY_TEXT);
	c = load_ok("j.conf");
	t = &c->tunnels[0];
	assert_int_equal(t->n_jump_hops, 2);
	assert_string_equal(t->jump_hops[0].user, "ops");
	assert_string_equal(t->jump_hops[0].host, "b1.example.com");
	assert_int_equal(t->jump_hops[0].port, 2201);
	assert_string_equal(t->jump_hops[1].user, "tunnel");
	assert_string_equal(t->jump_hops[1].host, "fd00::1");
	assert_int_equal(t->jump_hops[1].port, 22);
	assert_non_null(strstr(t->jump_identity_file, "/id2"));
	assert_int_equal(t->jump_identity_file_digest.size, strlen(KEY_TEXT));
	for (size_t i = 1; i < 3; i++) {
		assert_int_equal(c->tunnels[i].n_jump_hops, 0);
		assert_null(c->tunnels[i].jump_hops);
	}
	config_free(c);

	write_file("j.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		   "proxy_jump = b1,b2:0\n"
		   "[tunnel:b]\n" TUNNEL_BODY "local_forward = 5002 db:5432\n"
		   "proxy_jump = h1,h2,h3,h4,h5,h6,h7,h8,h9\n"
		   "[tunnel:c]\n" TUNNEL_BODY "local_forward = 5003 db:5432\n"
		   "proxy_jump_identity_file = id2\n"
		   "[tunnel:d]\n" TUNNEL_BODY "local_forward = 5004 db:5432\n"
		   "proxy_jump = b1\n"
		   "proxy_jump_identity_file = id_open\n"
		   "proxy_jump_identity_passphrase_file = pass_open\n"
		   "[tunnel:e]\n" TUNNEL_BODY "local_forward = 5005 db:5432\n"
		   "proxy_jump = b1\n"
		   "proxy_jump_identity_file = id_encrypted\n"
		   "[tunnel:f]\n" TUNNEL_BODY "local_forward = 5006 db:5432\n"
		   "proxy_jump = b1\n"
		   "proxy_jump_identity_passphrase_file = pass\n");
	load_fails("j.conf",
		   EXPECT("@DIR@/j.conf:7: invalid proxy_jump 'b1,b2:0': hop 2: invalid port '0' "
			  "(1..65535)",
			  "@DIR@/j.conf:14: invalid proxy_jump 'h1,h2,h3,h4,h5,h6,h7,h8,h9': too "
			  "many hops (max 8)",
			  "@DIR@/j.conf:21: proxy_jump_identity_file needs proxy_jump",
			  "@DIR@/j.conf:29: proxy_jump identity file @DIR@/id_open is readable by "
			  "group or others (mode 0644): like OpenSSH, moletun refuses unprotected "
			  "private keys",
			  "@DIR@/j.conf:30: proxy_jump identity passphrase file @DIR@/pass_open is "
			  "readable by group or others (mode 0640): like OpenSSH, moletun refuses "
			  "unprotected key passphrases",
			  "@DIR@/j.conf:38: proxy_jump identity file @DIR@/id_encrypted is "
			  "encrypted: set proxy_jump_identity_passphrase_file",
			  "@DIR@/j.conf:46: proxy_jump_identity_passphrase_file needs "
			  "proxy_jump_identity_file"));
}

static void test_identity_modes(void **state)
{
	struct config *c;

	(void)state;
	write_file("m.conf", 0644, "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n");
	assert_int_equal(chmod(path_of("id"), 0400), 0);
	c = load_ok("m.conf");
	config_free(c);
	assert_int_equal(chmod(path_of("id"), 0620), 0);
	load_fails("m.conf", EXPECT("@DIR@/m.conf:4: identity file @DIR@/id is accessible by "
				    "group or others (mode 0620): like OpenSSH, moletun refuses "
				    "unprotected private keys"));
	assert_int_equal(chmod(path_of("id"), 0604), 0);
	load_fails("m.conf", EXPECT("@DIR@/m.conf:4: identity file @DIR@/id is readable by "
				    "group or others (mode 0604): like OpenSSH, moletun refuses "
				    "unprotected private keys"));
}

static void test_auth_rules(void **state)
{
	struct config *c;

	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:a]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5001 db:5432\n"
		   "identity_passphrase_file = pass\n"
		   "agent_socket = /run/agent\n"
		   "[tunnel:b]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5002 db:5432\n"
		   "use_agent = maybe\n"
		   "identity_file = id_encrypted\n"
		   "identity_passphrase_file = pass\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:1: no authentication in [tunnel:a] (set identity_file or "
			  "use_agent = yes)",
			  "@DIR@/m.conf:6: identity_passphrase_file needs identity_file",
			  "@DIR@/m.conf:7: agent_socket needs use_agent = yes",
			  "@DIR@/m.conf:13: invalid value 'maybe' for use_agent (expected yes or "
			  "no)"));

	write_file("agent.conf", 0644,
		   "[tunnel:a]\n"
		   "host = h\nuser = u\nknown_hosts_file = known_hosts\n"
		   "local_forward = 5001 db:5432\n"
		   "use_agent = yes\n");
	c = load_ok("agent.conf");
	assert_true(c->tunnels[0].use_agent);
	assert_null(c->tunnels[0].identity_file);
	config_free(c);
}

static void test_known_hosts(void **state)
{
	struct config *c;

	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:a]\n"
		   "host = h\nuser = u\nidentity_file = id\nlocal_forward = 5001 db:5432\n"
		   "[tunnel:b]\n"
		   "host = h\nuser = u\nidentity_file = id\nlocal_forward = 5002 db:5432\n"
		   "known_hosts_file = nope\n"
		   "[tunnel:c]\n"
		   "host = h\nuser = u\nidentity_file = id\nlocal_forward = 5003 db:5432\n"
		   "known_hosts_file = nodir/known_hosts\n"
		   "strict_host_key_checking = accept-new\n"
		   "[tunnel:d]\n"
		   "host = h\nuser = u\nidentity_file = id\nlocal_forward = 5004 db:5432\n"
		   "strict_host_key_checking = accept-new\n"
		   "[tunnel:e]\n"
		   "host = h\nuser = u\nidentity_file = id\nlocal_forward = 5005 db:5432\n"
		   "known_hosts_file = .\n"
		   "strict_host_key_checking = maybe\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:1: known_hosts_file required unless "
			  "strict_host_key_checking = no",
			  "@DIR@/m.conf:11: known_hosts file @DIR@/nope: No such file or directory",
			  "@DIR@/m.conf:17: known_hosts file @DIR@/nodir/known_hosts cannot be "
			  "created: @DIR@/nodir: No such file or directory",
			  "@DIR@/m.conf:19: known_hosts_file required unless "
			  "strict_host_key_checking = no",
			  "@DIR@/m.conf:31: invalid value 'maybe' for strict_host_key_checking "
			  "(expected yes, accept-new or no)"));

	write_file("ok.conf", 0644,
		   "[tunnel:a]\n"
		   "host = h\nuser = u\nidentity_file = id\nlocal_forward = 5001 db:5432\n"
		   "strict_host_key_checking = no\n"
		   "[tunnel:b]\n"
		   "host = h\nuser = u\nidentity_file = id\nlocal_forward = 5002 db:5432\n"
		   "known_hosts_file = created_later\n"
		   "strict_host_key_checking = accept-new\n");
	c = load_ok("ok.conf");
	assert_int_equal(c->tunnels[0].strict_host_key_checking, HOST_KEY_NO);
	assert_null(c->tunnels[0].known_hosts_file);
	assert_string_equal(c->tunnels[1].known_hosts_file, path_of("created_later"));
	config_free(c);
}

static void test_values(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "[moletun]\n"
		   "log_level = loud\n"
		   "control_socket = "
		   "/a/very/long/path/for/a/unix/socket/that/does/not/fit/into/sun_path/because/"
		   "it/is/longer/than/107/characters.sock\n"
		   "control_group = no_such_group_here\n"
		   "[tunnel:primary]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		   "keepalive_interval = x5\n"
		   "connect_timeout = 0\n"
		   "keepalive_count_max = 0\n"
		   "max_connections = lots\n"
		   "down_hold = 1h\n"
		   "auth_retry_interval = 99999999999999999999h\n"
		   "port = 65536\n"
		   "local_forward = 127.0.0.1:0 db:5432\n"
		   "remote_forward = 9000\n"
		   "user = a b\n"
		   "host = db/x\n"
		   "keepalive_count_max = 3\n"
		   "backoff_max = \n");
	load_fails(
	    "m.conf",
	    EXPECT("@DIR@/m.conf:2: invalid value 'loud' for log_level (expected debug, "
		   "info, notice, warning or err)",
		   "@DIR@/m.conf:3: control_socket path too long (max 107 characters)",
		   "@DIR@/m.conf:4: unknown group 'no_such_group_here' for control_group",
		   "@DIR@/m.conf:11: invalid duration 'x5' for keepalive_interval",
		   "@DIR@/m.conf:12: connect_timeout must be at least 100ms (got 0)",
		   "@DIR@/m.conf:13: keepalive_count_max must be between 1 and 100 (got 0)",
		   "@DIR@/m.conf:14: invalid number 'lots' for max_connections",
		   "@DIR@/m.conf:15: down_hold must be at most 5m (got 1h)",
		   "@DIR@/m.conf:16: duration '99999999999999999999h' for "
		   "auth_retry_interval is too large",
		   "@DIR@/m.conf:17: invalid port '65536' for port (1..65535)",
		   "@DIR@/m.conf:18: invalid local_forward '127.0.0.1:0 db:5432': invalid "
		   "listen port '0' (1..65535)",
		   "@DIR@/m.conf:19: invalid remote_forward '9000': missing target "
		   "(expected '[bind:]port host:port')",
		   "@DIR@/m.conf:20: duplicate key 'user' in [tunnel:primary] (first set at "
		   "@DIR@/m.conf:7)",
		   "@DIR@/m.conf:21: duplicate key 'host' in [tunnel:primary] (first set at "
		   "@DIR@/m.conf:6)",
		   "@DIR@/m.conf:22: duplicate key 'keepalive_count_max' in [tunnel:primary] "
		   "(first set at @DIR@/m.conf:13)",
		   "@DIR@/m.conf:23: empty value for backoff_max"));
}

/* audit_interval: days, 0 (off), and the range. */
static void test_audit_interval(void **state)
{
	struct config *c;

	(void)state;
	write_file("a.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\naudit_interval = 0\n"
		   "[tunnel:b]\n" TUNNEL_BODY "local_forward = 5002 db:5432\naudit_interval = 6h\n"
		   "[tunnel:c]\n" TUNNEL_BODY
		   "local_forward = 5003 db:5432\naudit_interval = 30d\n");
	c = load_ok("a.conf");
	assert_int_equal(c->tunnels[0].audit_interval_ms, 0);
	assert_int_equal(c->tunnels[1].audit_interval_ms, 6 * 3600000);
	assert_int_equal(c->tunnels[2].audit_interval_ms, 30ull * 86400000);
	config_free(c);
	write_file("a.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		   "audit_interval = 31d\n"
		   "[tunnel:b]\n" TUNNEL_BODY "local_forward = 5002 db:5432\n"
		   "audit_interval = daily\n");
	load_fails("a.conf",
		   EXPECT("@DIR@/a.conf:7: audit_interval must be at most 30d (got 31d)",
			  "@DIR@/a.conf:14: invalid duration 'daily' for audit_interval"));
}

static void test_string_checks(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:primary]\n"
		   "host = db/x\n"
		   "user = a b\n"
		   "identity_file = id\n"
		   "known_hosts_file = known_hosts\n"
		   "local_forward = 5001 db:5432\n"
		   "[tunnel:second]\n"
		   "host = [::1]\n"
		   "user = u\n"
		   "identity_file = id\n"
		   "known_hosts_file = known_hosts\n"
		   "local_forward = 5002 db:5432\n");
	load_fails("m.conf", EXPECT("@DIR@/m.conf:2: invalid host name 'db/x' for host",
				    "@DIR@/m.conf:3: invalid user 'a b' (no spaces allowed)",
				    "@DIR@/m.conf:8: invalid host name '[::1]' for host"));
}

static void test_backoff_and_keepalive(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		   "backoff_initial = 2s\n"
		   "keepalive_interval = 0\n"
		   "[tunnel:b]\n" TUNNEL_BODY "local_forward = 5002 db:5432\n"
		   "backoff_max = 50ms\n"
		   "[tunnel:c]\n" TUNNEL_BODY "local_forward = 5003 db:5432\n"
		   "backoff_initial = nonsense\n"
		   "backoff_max = 50ms\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:7: backoff_initial 2s is greater than backoff_max 1s",
			  "@DIR@/m.conf:8: keepalive_interval must be at least 1s (got 0)",
			  "@DIR@/m.conf:15: backoff_initial 100ms is greater than backoff_max 50ms",
			  "@DIR@/m.conf:22: invalid duration 'nonsense' for backoff_initial"));
}

static void test_long_lines(void **state)
{
	char text[2048], value[400];
	struct config *c;

	(void)state;
	/* 198 characters fit (inih's 200-byte buffer holds them, "\n" and NUL). */
	memset(value, 'x', sizeof(value));
	snprintf(text, sizeof(text),
		 "[tunnel:a]\n"
		 "#%.197s\n"
		 "host = %.191s\n"
		 "user = u\nidentity_file = id\nknown_hosts_file = known_hosts\n"
		 "local_forward = 5001 db:5432\n",
		 value, value);
	write_file("fits.conf", 0644, text);
	c = load_ok("fits.conf");
	assert_int_equal(strlen(c->tunnels[0].host), 191);
	config_free(c);

	snprintf(text, sizeof(text),
		 "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		 "#%.198s\n"
		 "url = https://example.com/%.400s\n"
		 "hots = 1\n"
		 "[tunnel:b]\n"
		 "user = u\n",
		 value, value);
	write_file("long.conf", 0644, text);
	load_fails(
	    "long.conf",
	    EXPECT("@DIR@/long.conf:7: line too long (max 198 characters)",
		   "@DIR@/long.conf:8: line too long (max 198 characters)",
		   "@DIR@/long.conf:9: unknown key 'hots' in [tunnel:a]",
		   "@DIR@/long.conf:10: missing required key 'host' in [tunnel:b]",
		   "@DIR@/long.conf:10: no forwards in [tunnel:b] (add local_forward or "
		   "remote_forward)",
		   "@DIR@/long.conf:10: no authentication in [tunnel:b] (set identity_file or "
		   "use_agent = yes)",
		   "@DIR@/long.conf:10: known_hosts_file required unless "
		   "strict_host_key_checking = no"));

	/* A long last line without a newline is still too long, not cut. */
	snprintf(text, sizeof(text),
		 "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		 "local_forward = 5002 %.300s:5432",
		 value);
	write_file("eof.conf", 0644, text);
	load_fails("eof.conf", EXPECT("@DIR@/eof.conf:7: line too long (max 198 characters)"));

	/* A last line without a newline is read. */
	write_file("short.conf", 0644,
		   "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\nport = 2200");
	c = load_ok("short.conf");
	assert_int_equal(c->tunnels[0].port, 2200);
	config_free(c);
}

static void test_line_numbers_after_continuation(void **state)
{
	struct config *c;

	(void)state;
	/* inih would join indented lines to the previous key; moletun reads every line alone. */
	write_file("m.conf", 0644,
		   "[tunnel:a]\n"
		   "  host = h\n"
		   "    user = u\n"
		   "local_forward = 5001 db:5432\n"
		   "    5002 db:5432\n"
		   "\n"
		   "; comment\n"
		   "\t# another\n"
		   "    identity_file = id\n"
		   "known_hosts_file = known_hosts\n"
		   "hots = 1\n"
		   "not a key line\n"
		   "    port: 22\n"
		   "[tunnel:b]\n"
		   "    still not a key\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:5: continuation lines are not supported (repeat the key on "
			  "a line of its own)",
			  "@DIR@/m.conf:11: unknown key 'hots' in [tunnel:a]",
			  "@DIR@/m.conf:12: expected 'key = value', '[section]' or a comment",
			  "@DIR@/m.conf:13: continuation lines are not supported (repeat the key "
			  "on a line of its own)",
			  "@DIR@/m.conf:14: missing required key 'host' in [tunnel:b]",
			  "@DIR@/m.conf:14: missing required key 'user' in [tunnel:b]",
			  "@DIR@/m.conf:14: no forwards in [tunnel:b] (add local_forward or "
			  "remote_forward)",
			  "@DIR@/m.conf:14: no authentication in [tunnel:b] (set identity_file or "
			  "use_agent = yes)",
			  "@DIR@/m.conf:14: known_hosts_file required unless "
			  "strict_host_key_checking = no",
			  "@DIR@/m.conf:15: expected 'key = value', '[section]' or a comment"));

	write_file("ok.conf", 0644,
		   "\xef\xbb\xbf[tunnel:a]\r\n"
		   "\thost = h\r\n"
		   "    user = u\r\n"
		   "    identity_file = id\r\n"
		   "    known_hosts_file = known_hosts\r\n"
		   "    local_forward = 5001 db:5432   ; first\r\n"
		   "    local_forward = 5002 db:5432\r\n");
	c = load_ok("ok.conf");
	assert_string_equal(c->tunnels[0].user, "u");
	assert_int_equal(c->tunnels[0].n_forwards, 2);
	assert_string_equal(c->tunnels[0].known_hosts_file, path_of("known_hosts"));
	config_free(c);
}

static void test_nul_byte(void **state)
{
	FILE *f;

	(void)state;
	f = fopen(path_of("m.conf"), "w");
	assert_non_null(f);
	fwrite("[moletun]\nlog_level = debug\0x\nhots = 1\n", 1, 39, f);
	fclose(f);
	load_fails("m.conf", EXPECT("@DIR@/m.conf:2: line contains a NUL byte",
				    "@DIR@/m.conf:3: unknown key 'hots' in [moletun]"));
}

static void test_includes(void **state)
{
	struct config *c;

	(void)state;
	make_dir("conf.d");
	make_dir("empty.d");
	write_file("conf.d/b.conf", 0644,
		   "[tunnel:b]\n"
		   "host = h\nuser = u\nlocal_forward = 5002 db:5432\n"
		   "identity_file = ../id\nknown_hosts_file = ../known_hosts\n");
	write_file("conf.d/a.conf", 0644,
		   "[tunnel:a]\n"
		   "host = h\nuser = u\nlocal_forward = 5001 db:5432\n"
		   "identity_file = ../id\nknown_hosts_file = ../known_hosts\n");
	write_file("conf.d/ignored.txt", 0644, "garbage\n");
	write_file("m.conf", 0644,
		   "[tunnel:first]\n" TUNNEL_BODY "local_forward = 5000 db:5432\n"
		   "[include]\n"
		   "files = conf.d/*.conf\n"
		   "files = empty.d/*.conf\n"
		   "[tunnel:last]\n" TUNNEL_BODY "local_forward = 5003 db:5432\n");
	c = load_ok("m.conf");
	assert_int_equal(c->n_tunnels, 4);
	assert_string_equal(c->tunnels[0].name, "first");
	assert_string_equal(c->tunnels[1].name, "a");
	assert_string_equal(c->tunnels[2].name, "b");
	assert_string_equal(c->tunnels[3].name, "last");
	assert_string_equal(c->tunnels[1].file, path_of("conf.d/a.conf"));
	assert_int_equal(c->tunnels[1].line, 1);
	assert_string_equal(c->tunnels[1].identity_file, path_of("conf.d/../id"));
	config_free(c);
}

static void test_include_errors(void **state)
{
	(void)state;
	make_dir("conf.d");
	write_file("conf.d/10-a.conf", 0644,
		   "[tunnel:a]\n"
		   "host = h\nuser = u\nlocal_forward = 5001 db:5432\n"
		   "identity_file = ../id\nknown_hosts_file = ../known_hosts\n"
		   "keepalive_interval = x5\n");
	write_file("conf.d/20-b.conf", 0644,
		   "\n[tunnel:a]\n"
		   "host = h\n"
		   "[tunnel:b]\n"
		   "host = h\nuser = u\nlocal_forward = 5001 db:5432\n"
		   "identity_file = ../id_open\nknown_hosts_file = ../known_hosts\n");
	write_file("m.conf", 0644,
		   "[include]\n"
		   "files = conf.d/*.conf\n"
		   "files = missing.conf\n"
		   "files = ~/x.conf\n"
		   "files = conf.d\n"
		   "[moletun]\n"
		   "bogus = 1\n");
	load_fails("m.conf",
		   EXPECT("@DIR@/m.conf:3: include file @DIR@/missing.conf: No such file or "
			  "directory",
			  "@DIR@/m.conf:4: files: '~' is not expanded, use an absolute path",
			  "@DIR@/m.conf:5: include file @DIR@/conf.d: not a regular file",
			  "@DIR@/m.conf:7: unknown key 'bogus' in [moletun]",
			  "@DIR@/conf.d/10-a.conf:7: invalid duration 'x5' for keepalive_interval",
			  "@DIR@/conf.d/20-b.conf:2: duplicate tunnel name 'a' (first defined at "
			  "@DIR@/conf.d/10-a.conf:1)",
			  "@DIR@/conf.d/20-b.conf:7: listen address 127.0.0.1:5001 already used by "
			  "tunnel 'a' (@DIR@/conf.d/10-a.conf:4)",
			  "@DIR@/conf.d/20-b.conf:8: identity file @DIR@/conf.d/../id_open is "
			  "readable by group or others (mode 0644): like OpenSSH, moletun refuses "
			  "unprotected private keys"));
}

static void test_include_cycle_and_depth(void **state)
{
	char name[32], text[128];

	(void)state;
	write_file("m.conf", 0644, "[include]\nfiles = a.conf\n");
	write_file("a.conf", 0644, "\n[include]\nfiles = m.conf\n");
	load_fails("m.conf", EXPECT("@DIR@/a.conf:3: include cycle: @DIR@/m.conf is already "
				    "being read"));

	/* A glob that also matches the including file is a cycle too. */
	make_dir("self.d");
	write_file("self.d/x.conf", 0644, "[include]\nfiles = *.conf\n");
	load_fails("self.d/x.conf", EXPECT("@DIR@/self.d/x.conf:2: include cycle: "
					   "@DIR@/self.d/x.conf is already being read"));

	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "d%d.conf", i);
		snprintf(text, sizeof(text), "[include]\nfiles = d%d.conf\n", i + 1);
		write_file(name, 0644, text);
	}
	write_file("d10.conf", 0644, "\n");
	load_fails("d0.conf", EXPECT("@DIR@/d8.conf:2: includes nested too deeply (max 8)"));
}

static void test_alerts(void **state)
{
	(void)state;
	write_file("m.conf", 0644,
		   "[tunnel:primary]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		   "[alert:both]\n"
		   "url = https://example.com/hook\n"
		   "exec = hook\n"
		   "[alert:neither]\n"
		   "format = slack\n"
		   "[alert:bad-values]\n"
		   "url = ftp://example.com/x\n"
		   "format = xml\n"
		   "header = no colon here\n"
		   "tunnels = primary ghost bad/name\n"
		   "tunnels = phantom\n"
		   "send_resolved = true\n"
		   "[alert:exec-only]\n"
		   "exec = not_executable\n"
		   "format = json\n"
		   "header = X-A: b\n"
		   "[alert:missing]\n"
		   "exec = /nonexistent/hook\n");
	load_fails(
	    "m.conf",
	    EXPECT("@DIR@/m.conf:7: both url and exec in [alert:both] (use exactly one)",
		   "@DIR@/m.conf:10: missing url or exec in [alert:neither]",
		   "@DIR@/m.conf:13: invalid url (expected http:// or https:// and a host)",
		   "@DIR@/m.conf:14: invalid value 'xml' for format (expected json, slack or "
		   "alertmanager)",
		   "@DIR@/m.conf:15: invalid header (expected 'Name: value')",
		   "@DIR@/m.conf:16: invalid tunnel name 'bad/name' in tunnels",
		   "@DIR@/m.conf:16: unknown tunnel 'ghost' in tunnels of [alert:bad-values]",
		   "@DIR@/m.conf:17: unknown tunnel 'phantom' in tunnels of "
		   "[alert:bad-values]",
		   "@DIR@/m.conf:18: invalid value 'true' for send_resolved (expected yes or "
		   "no)",
		   "@DIR@/m.conf:20: exec @DIR@/not_executable is not executable",
		   "@DIR@/m.conf:21: format is only used with url",
		   "@DIR@/m.conf:22: header is only used with url",
		   "@DIR@/m.conf:24: exec /nonexistent/hook: No such file or directory"));
}

static void test_many_errors_all_reported(void **state)
{
	char text[16384];
	size_t used = 0;
	struct diag d;
	struct config *c = NULL;

	(void)state;
	used += (size_t)snprintf(text + used, sizeof(text) - used,
				 "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n");
	for (int i = 0; i < 50; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, "bad%d = 1\n", i);
	write_file("m.conf", 0644, text);
	diag_init(&d);
	assert_int_equal(config_load(path_of("m.conf"), &c, &d), -EINVAL);
	assert_int_equal(d.count, 50);
	assert_string_equal(d.messages[49], expand("@DIR@/m.conf:56: unknown key 'bad49' in "
						   "[tunnel:a]"));
	diag_finish(&d);

	/* Garbage stops being reported at some point, with a note. */
	used = 0;
	for (int i = 0; i < 1000; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used, "garbage\n");
	write_file("junk.conf", 0644, text);
	diag_init(&d);
	assert_int_equal(config_load(path_of("junk.conf"), &c, &d), -EINVAL);
	assert_int_equal(d.count, 201);
	assert_string_equal(d.messages[200],
			    expand("@DIR@/junk.conf: too many errors, 1 more not shown"));
	diag_finish(&d);
}

/* A [moletun] metrics_textfile at DIR/name/moletun.prom and one tunnel. */
static void write_textfile_config(const char *name)
{
	char text[PATH_MAX + 512];

	snprintf(text, sizeof(text),
		 "[moletun]\nmetrics_textfile = %s/%s/moletun.prom\n"
		 "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n",
		 dir, name);
	write_file("m.conf", 0644, text);
}

/*
 * node_exporter serves whatever file is there: a directory every user may write to is
 * refused, sticky (/tmp) or not; one only root may write, or none yet, is fine.
 */
static void test_textfile_directory(void **state)
{
	struct config *c;

	(void)state;
	assert_int_equal(mkdir(path_of("tmp"), 0755), 0);
	assert_int_equal(chmod(path_of("tmp"), 01777), 0);
	write_textfile_config("tmp");
	load_fails("m.conf", EXPECT("@DIR@/m.conf:2: metrics_textfile @DIR@/tmp/moletun.prom: "
				    "directory @DIR@/tmp is writable by every user (mode 1777, "
				    "sticky like /tmp): a file another user puts there first "
				    "cannot be replaced by moletun, and node_exporter would serve "
				    "it; use a directory only moletun and root may write, such as "
				    "/var/lib/prometheus/node-exporter"));
	assert_int_equal(chmod(path_of("tmp"), 0777), 0);
	load_fails("m.conf", EXPECT("@DIR@/m.conf:2: metrics_textfile @DIR@/tmp/moletun.prom: "
				    "directory @DIR@/tmp is writable by every user (mode 0777): "
				    "another user can replace the file node_exporter serves; use a "
				    "directory only moletun and root may write, such as "
				    "/var/lib/prometheus/node-exporter"));
	assert_int_equal(chmod(path_of("tmp"), 0755), 0);
	c = load_ok("m.conf");
	config_free(c);
	write_textfile_config("not-yet");
	c = load_ok("m.conf");
	config_free(c);
}

/*
 * Linked with -Wl,--wrap=fstat64 (tests/meson.build; fstat() is fstat64 with
 * _FILE_OFFSET_BITS=64): the next fstat() can be made to fail.
 */
int __real_fstat64(int fd, struct stat *st);
int __wrap_fstat64(int fd, struct stat *st);
static int fstat_fails_with; /* errno of the next fstat(); 0: the real one */

int __wrap_fstat64(int fd, struct stat *st)
{
	int err = fstat_fails_with;

	if (!err)
		return __real_fstat64(fd, st);
	fstat_fails_with = 0;
	/* what a caller that reads *st anyway would find: anything, here a directory */
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFDIR;
	errno = err;
	return -1;
}

/* A file opened but not statable: the error is fstat's, not a guess from *st. */
static void test_fstat_failure(void **state)
{
	static const char *const expected[] = {"@DIR@/m.conf: Input/output error", NULL};
	struct config *c = NULL;

	(void)state;
	write_file("m.conf", 0644, "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n");
	fstat_fails_with = EIO;
	assert_int_equal(load_expect("m.conf", &c, expected), -EIO);
	assert_null(c);
	assert_int_equal(fstat_fails_with, 0);
}

static struct config *load_text(const char *text)
{
	write_file("eq.conf", 0644, text);
	return load_ok("eq.conf");
}

/* Writes [tunnel:a] with the base keys, `change` replacing the base line of its key. */
static struct config *load_tunnel_with(const char *change)
{
	static const char *const base[] = {
	    "host = db.example.com\n",	      "user = tunnel\n",
	    "identity_file = id\n",	      "known_hosts_file = known_hosts\n",
	    "local_forward = 5001 db:5432\n",
	};
	char text[1024] = "[tunnel:a]\n";
	size_t key_len = strcspn(change, " ");

	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
		if (strncmp(base[i], change, key_len + 1) != 0)
			strcat(text, base[i]);
	strcat(text, change);
	return load_text(text);
}

static void expect_diff(const struct config *base, const char *text, const char *key,
			bool contents);

static void test_tunnel_config_equal(void **state)
{
	static const char *const changes[] = {
	    "host = other\n",
	    "port = 2222\n",
	    "user = other\n",
	    "identity_file = id2\n",
	    "identity_passphrase_file = pass\n",
	    "use_agent = yes\n",
	    "known_hosts_file = pass\n",
	    "strict_host_key_checking = accept-new\n",
	    "local_forward = 5009 db:5432\n",
	    "local_forward = 5001 db:5433\n",
	    "local_forward = 127.0.0.2:5001 db:5432\n",
	    "remote_forward = 5001 db:5432\n",
	    "connect_timeout = 6s\n",
	    "keepalive_interval = 6s\n",
	    "keepalive_count_max = 4\n",
	    "backoff_initial = 200ms\n",
	    "backoff_max = 2s\n",
	    "auth_retry_interval = 61s\n",
	    "down_hold = 1s\n",
	    "max_connections = 1\n",
	    "proxy_jump = bastion\n",
	};
	struct config *base, *same, *other;

	(void)state;
	write_file("id2", 0600, KEY_TEXT);
	base = load_tunnel_with("port = 22\n");
	same = load_text("; other comments, same tunnel\n[tunnel:a]\n" TUNNEL_BODY
			 "local_forward = 127.0.0.1:5001 db:5432\n");
	assert_true(tunnel_config_equal(&base->tunnels[0], &same->tunnels[0]));
	assert_true(tunnel_config_equal(&same->tunnels[0], &base->tunnels[0]));
	config_free(same);
	other = load_text("[tunnel:b]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n");
	assert_false(tunnel_config_equal(&base->tunnels[0], &other->tunnels[0]));
	config_free(other);
	for (size_t i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
		other = load_tunnel_with(changes[i]);
		if (tunnel_config_equal(&base->tunnels[0], &other->tunnels[0]))
			fail_msg("change not noticed: %s", changes[i]);
		config_free(other);
	}
	config_free(base);

	/* The same path written otherwise is no change; another port or user is. */
	base = load_tunnel_with("proxy_jump = b1,ops@b2:2222\n");
	expect_diff(base,
		    "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		    "proxy_jump = tunnel@b1:22, ops@b2:2222\n",
		    NULL, false);
	expect_diff(base,
		    "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		    "proxy_jump = b1,ops@b2:2223\n",
		    "proxy_jump", false);
	expect_diff(base,
		    "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		    "proxy_jump = b1,b2:2222\n",
		    "proxy_jump", false);
	expect_diff(base,
		    "[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		    "proxy_jump = none\n",
		    "proxy_jump", false);
	config_free(base);
}

/* [tunnel:a] naming a key, a passphrase file and a known_hosts file. */
#define CONTENTS_TUNNEL                                                                            \
	"[tunnel:a]\n" TUNNEL_BODY "identity_passphrase_file = pass\n"                             \
	"local_forward = 5001 db:5432\n"

/* Loads `text` and checks what tunnel_config_diff() says against `base`. */
static void expect_diff(const struct config *base, const char *text, const char *key, bool contents)
{
	struct config *other = load_text(text);
	bool got_contents = !contents;
	const char *changed;

	changed = tunnel_config_diff(&base->tunnels[0], &other->tunnels[0], &got_contents);
	if (!key) {
		if (changed)
			fail_msg("unexpected change: %s%s", changed,
				 got_contents ? " contents" : "");
		assert_true(tunnel_config_equal(&base->tunnels[0], &other->tunnels[0]));
		assert_true(tunnel_config_equal(&other->tunnels[0], &base->tunnels[0]));
	} else {
		if (!changed)
			fail_msg("change not noticed: %s", key);
		assert_string_equal(changed, key);
		assert_int_equal(got_contents, contents);
		assert_false(tunnel_config_equal(&base->tunnels[0], &other->tunnels[0]));
		assert_false(tunnel_config_equal(&other->tunnels[0], &base->tunnels[0]));
	}
	config_free(other);
}

/* A file rewritten in place under the same path is a change; the same bytes are not. */
static void test_tunnel_config_file_contents(void **state)
{
	static const struct {
		const char *file, *key, *original, *changed;
		mode_t mode;
	} files[] = {
	    {"id", "identity_file", KEY_TEXT, ROTATED_KEY_TEXT, 0600},
	    {"id", "identity_file", KEY_TEXT, KEY_TEXT "\n", 0600},
	    {"pass", "identity_passphrase_file", "secret\n", "secreT\n", 0600},
	    {"pass", "identity_passphrase_file", "secret\n", "", 0600},
	    {"known_hosts", "known_hosts_file", KNOWN_HOSTS_TEXT,
	     KNOWN_HOSTS_TEXT "other.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG\n", 0644},
	};
	const struct tunnel_config *t;
	struct config *base;

	(void)state;
	base = load_text(CONTENTS_TUNNEL);
	t = &base->tunnels[0];
	assert_int_equal(t->identity_file_digest.size, strlen(KEY_TEXT));
	assert_int_equal(t->identity_passphrase_file_digest.size, strlen("secret\n"));
	assert_int_equal(t->known_hosts_file_digest.size, strlen(KNOWN_HOSTS_TEXT));
	/* The same bytes written again, with other modes (which the loader checks apart). */
	write_file("id", 0400, KEY_TEXT);
	write_file("pass", 0400, "secret\n");
	write_file("known_hosts", 0600, KNOWN_HOSTS_TEXT);
	expect_diff(base, CONTENTS_TUNNEL, NULL, false);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		write_file(files[i].file, files[i].mode, files[i].changed);
		expect_diff(base, CONTENTS_TUNNEL, files[i].key, true);
		write_file(files[i].file, files[i].mode, files[i].original);
		expect_diff(base, CONTENTS_TUNNEL, NULL, false);
	}
	/* Another path is a change of the value, even to a file with the same bytes. */
	write_file("id2", 0600, KEY_TEXT);
	expect_diff(base,
		    "[tunnel:a]\nhost = db.example.com\nuser = tunnel\nidentity_file = id2\n"
		    "known_hosts_file = known_hosts\nidentity_passphrase_file = pass\n"
		    "local_forward = 5001 db:5432\n",
		    "identity_file", false);
	config_free(base);
}

/* moletun appends to known_hosts_file itself under accept-new: no restart for that. */
static void test_tunnel_config_known_hosts_accept_new(void **state)
{
	static const char text[] = CONTENTS_TUNNEL "strict_host_key_checking = accept-new\n";
	struct config *base;

	(void)state;
	base = load_text(text);
	write_file("known_hosts", 0600,
		   KNOWN_HOSTS_TEXT "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG\n");
	expect_diff(base, text, NULL, false);
	/* the key and passphrase files are still compared */
	write_file("pass", 0600, "other\n");
	expect_diff(base, text, "identity_passphrase_file", true);
	config_free(base);
}

static void test_find_tunnel(void **state)
{
	struct config *c;

	(void)state;
	c = load_text("[tunnel:a]\n" TUNNEL_BODY "local_forward = 5001 db:5432\n"
		      "[tunnel:b]\n" TUNNEL_BODY "local_forward = 5002 db:5432\n");
	assert_ptr_equal(config_find_tunnel(c, "b"), &c->tunnels[1]);
	assert_ptr_equal(config_find_tunnel(c, "a"), &c->tunnels[0]);
	assert_null(config_find_tunnel(c, "c"));
	config_free(c);
}

static char *summary_of(const struct config *c)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	assert_non_null(f);
	config_print_summary(c, f);
	fclose(f);
	return text;
}

static void test_summary(void **state)
{
	struct config *c;
	char *text;

	(void)state;
	c = load_text("[tunnel:primary]\n" TUNNEL_BODY
		      "local_forward = 127.0.0.1:5433 pg_main:5432\n"
		      "remote_forward = 127.0.0.1:9000 127.0.0.1:9000\n"
		      "[tunnel:v6]\n"
		      "host = fd00::1\nport = 2222\nuser = u\nuse_agent = yes\n"
		      "strict_host_key_checking = no\n"
		      "local_forward = [::1]:5434 [fd00::5]:5432\n"
		      "keepalive_interval = 1m30s\n"
		      "[alert:ops]\n"
		      "url = https://user:pw@hooks.example.com:8443/services/secret?x=1\n"
		      "header = Authorization: Bearer abc\n"
		      "[alert:page]\n"
		      "exec = hook\n"
		      "tunnels = primary v6\n"
		      "down_after = 0\n"
		      "[alert:bare]\n"
		      "url = http://alertmanager\n"
		      "format = alertmanager\n");
	text = summary_of(c);
	assert_string_equal(text, expand("primary  tunnel@db.example.com:22  L 127.0.0.1:5433 -> "
					 "pg_main:5432  R 127.0.0.1:9000 -> 127.0.0.1:9000\n"
					 "v6       u@[fd00::1]:2222  L [::1]:5434 -> "
					 "[fd00::5]:5432  use_agent=yes  "
					 "strict_host_key_checking=no  keepalive_interval=1m30s\n"
					 "alert:ops   json https://hooks.example.com:8443/...  "
					 "headers=1\n"
					 "alert:page  exec @DIR@/hook  down_after=0  "
					 "tunnels=primary,v6\n"
					 "alert:bare  alertmanager http://alertmanager\n"));
	free(text);
	config_free(c);

	write_file("empty.conf", 0644, "[moletun]\nlog_level = debug\n");
	c = load_ok("empty.conf");
	text = summary_of(c);
	assert_string_equal(text, "no tunnels configured\n");
	free(text);
	config_free(c);
}

static void test_warnings(void **state)
{
	struct config *c;
	struct diag d;

	(void)state;
	c = load_text("[tunnel:a]\n" TUNNEL_BODY "local_forward = *:5001 db:5432\n"
		      "remote_forward = *:5001 db:5432\n"
		      "strict_host_key_checking = no\n");
	diag_init(&d);
	config_warnings(c, &d);
	assert_int_equal(d.count, 2);
	assert_string_equal(d.messages[0],
			    expand("@DIR@/eq.conf:1: tunnel 'a' does not check the server's host "
				   "key (strict_host_key_checking = no): anyone on the path can "
				   "impersonate it"));
	assert_string_equal(d.messages[1],
			    expand("@DIR@/eq.conf:1: tunnel 'a' listens on every address "
				   "(0.0.0.0:5001): anyone who can reach this machine can use the "
				   "forward"));
	diag_finish(&d);
	config_free(c);
}

static void test_table(void **state)
{
	(void)state;
	for (size_t s = 0; s < CONFIG_SECTION_COUNT; s++) {
		const struct config_section_info *sec = &config_sections[s];
		void *object = sec->object_size ? calloc(1, sec->object_size) : NULL;

		assert_non_null(sec->help);
		assert_true(sec->n_keys <= CONFIG_MAX_KEYS);
		for (size_t i = 0; i < sec->n_keys; i++) {
			const struct config_key *k = &sec->keys[i];

			assert_non_null(k->help);
			assert_non_null(k->placeholder);
			assert_ptr_equal(config_key_find((enum config_section)s, k->name), k);
			if (k->default_value)
				assert_false(k->flags & CONFIG_KEY_REQUIRED);
			if (k->flags & CONFIG_KEY_CONTENTS) {
				assert_int_equal(k->type, CONFIG_TYPE_PATH);
				assert_true(k->digest_offset > 0);
				assert_true(k->digest_offset + sizeof(struct file_digest) <=
					    sec->object_size);
			}
		}
		if (object) {
			assert_int_equal(config_section_defaults((enum config_section)s, object),
					 0);
			for (size_t i = 0; i < sec->n_keys; i++)
				if (sec->keys[i].default_value)
					assert_true(config_key_is_default(&sec->keys[i], object));
			config_section_free((enum config_section)s, object);
			free(object);
		}
	}
	assert_string_equal(host_key_policy_str(HOST_KEY_ACCEPT_NEW), "accept-new");
	assert_string_equal(alert_format_str(ALERT_FORMAT_ALERTMANAGER), "alertmanager");
}

static void test_man_keys(void **state)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);

	(void)state;
	assert_non_null(f);
	config_print_man_keys(f);
	fclose(f);
	assert_non_null(strstr(text, ".SS \"[tunnel:\\fINAME\\fP]\"\n"));
	assert_non_null(strstr(text, ".TP\n\\fBkeepalive_interval\\fR = \\fIDURATION\\fR\n"));
	assert_non_null(strstr(text, "Default: \\fB5s\\fR.\n"));
	assert_non_null(strstr(text, "yes|accept\\-new|no"));
	for (size_t s = 0; s < CONFIG_SECTION_COUNT; s++) {
		const struct config_section_info *sec = &config_sections[s];

		for (size_t i = 0; i < sec->n_keys; i++) {
			char want[128], escaped[64];
			size_t n = 0;

			for (const char *p = sec->keys[i].name; *p; p++)
				escaped[n++] = *p;
			escaped[n] = '\0';
			snprintf(want, sizeof(want), "\\fB%s\\fR = ", escaped);
			if (!strstr(text, want))
				fail_msg("key %s missing from the man page", escaped);
		}
	}
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_every_key, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_key_and_section, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_section_reports_at_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ssh_host_before_running_ssh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_listen_conflicts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_identity_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_proxy_jump, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_identity_modes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_auth_rules, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_known_hosts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_values, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_interval, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_string_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backoff_and_keepalive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_line_numbers_after_continuation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nul_byte, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_includes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_include_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_include_cycle_and_depth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alerts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_errors_all_reported, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tunnel_config_equal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tunnel_config_file_contents, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tunnel_config_known_hosts_accept_new, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_find_tunnel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_summary, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_warnings, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fstat_failure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_textfile_directory, setup, teardown),
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_man_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
