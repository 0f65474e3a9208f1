#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sshconf.h"

/* Trimmed from what OpenSSH 9.2's ssh -G -v -F FILE db-sidecar printed. */
static const char full_out[] =
    "host db-sidecar\n"
    "user tester\n"
    "hostname 127.0.0.1\n"
    "port 2222\n"
    "addressfamily any\n"
    "stricthostkeychecking true\n"
    "serveralivecountmax 2\n"
    "serveraliveinterval 4\n"
    "ciphers chacha20-poly1305@openssh.com,aes128-ctr\n"
    "localforward 15432 [127.0.0.1]:5432\n"
    "localforward [127.0.0.2]:15433 [::1]:5433\n"
    "remoteforward 8080 [localhost]:80\n"
    "identityfile ~/.ssh/id_test\n"
    "identityfile /etc/moletun/id_db\n"
    "globalknownhostsfile /etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2\n"
    "userknownhostsfile /etc/moletun/kh /etc/moletun/kh2\n"
    "connecttimeout 7\n"
    "proxyjump jumper@bastion:2200\n";

static const char full_err[] =
    "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026\n"
    "debug1: Reading configuration data /etc/moletun/ssh_config\n"
    "debug1: /etc/moletun/ssh_config line 1: Applying options for db-sidecar\n"
    "debug1: Setting implicit ProxyCommand from ProxyJump: ssh -l jumper -p 2200 -v -W "
    "'[%h]:%p' bastion\n";

static struct sshconf parse(const char *out, const char *err)
{
	struct sshconf c;

	assert_int_equal(sshconf_parse(out, err, &c), 0);
	return c;
}

static void test_full(void **state)
{
	struct sshconf c = parse(full_out, full_err);

	(void)state;
	assert_string_equal(c.hostname, "127.0.0.1");
	assert_string_equal(c.user, "tester");
	assert_int_equal(c.port, 2222);
	assert_int_equal(c.n_identity_files, 2);
	assert_string_equal(c.identity_files[0], "~/.ssh/id_test");
	assert_string_equal(c.identity_files[1], "/etc/moletun/id_db");
	assert_string_equal(c.known_hosts_file, "/etc/moletun/kh");
	assert_string_equal(sshconf_host_key_policy(&c), "yes");
	assert_string_equal(c.proxy_jump, "jumper@bastion:2200");
	assert_null(c.proxy_command);
	assert_null(c.certificate_file);
	assert_int_equal(c.connect_timeout, 7);
	assert_int_equal(c.alive_interval, 4);
	assert_int_equal(c.alive_count_max, 2);
	assert_true(c.host_matched);
	assert_false(c.match_exec);
	assert_null(c.message);
	assert_true(sshconf_alias_known(&c, "db-sidecar"));
	sshconf_free(&c);
}

/* ssh -G brackets every forward host; moletun keeps brackets for IPv6 only. */
static void test_forwards_unbracketed(void **state)
{
	struct sshconf c = parse(full_out, "");

	(void)state;
	assert_int_equal(c.n_local_forwards, 2);
	assert_string_equal(c.local_forwards[0], "15432 127.0.0.1:5432");
	assert_string_equal(c.local_forwards[1], "127.0.0.2:15433 [::1]:5433");
	assert_int_equal(c.n_remote_forwards, 1);
	assert_string_equal(c.remote_forwards[0], "8080 localhost:80");
	sshconf_free(&c);
}

/* What ssh -G prints for a name no Host line matches: its defaults. */
static void test_unknown_alias(void **state)
{
	struct sshconf c = parse("user root\nhostname db-sidcar\nport 22\n"
				 "stricthostkeychecking ask\nconnecttimeout none\n"
				 "serveraliveinterval 0\n",
				 "debug1: Reading configuration data /etc/ssh/ssh_config\n"
				 "debug1: /etc/ssh/ssh_config line 21: Applying options for *\n");

	(void)state;
	assert_false(c.host_matched);
	assert_false(sshconf_alias_known(&c, "db-sidcar"));
	/* case aside: ssh lowercases the name it was given */
	assert_false(sshconf_alias_known(&c, "DB-Sidcar"));
	assert_int_equal(c.connect_timeout, 0);
	assert_int_equal(c.alive_interval, 0);
	assert_string_equal(sshconf_host_key_policy(&c), "yes");
	sshconf_free(&c);
}

/* A HostName of its own makes an alias known even when only "Host *" applied. */
static void test_known_by_hostname(void **state)
{
	struct sshconf c =
	    parse("hostname db.internal\n", "debug1: cfg line 3: Applying options for *\n");

	(void)state;
	assert_true(sshconf_alias_known(&c, "db"));
	sshconf_free(&c);
}

/* A wildcard pattern other than a bare "*" is a match of the alias. */
static void test_known_by_pattern(void **state)
{
	struct sshconf c = parse("hostname db.internal\n",
				 "debug1: cfg line 3: Applying options for *.internal\n");

	(void)state;
	assert_true(c.host_matched);
	assert_true(sshconf_alias_known(&c, "db.internal"));
	sshconf_free(&c);
}

static void test_refused_settings(void **state)
{
	struct sshconf c = parse("hostname h\nproxycommand nc %h %p\n"
				 "certificatefile /etc/c1-cert.pub\ncertificatefile /etc/c2\n",
				 "debug1: cfg line 20: Applying options for h\n"
				 "debug2: checking match for 'exec \"true\"' host h originally h\n"
				 "debug1: Executing command: 'true'\n");

	(void)state;
	assert_string_equal(c.proxy_command, "nc %h %p");
	assert_string_equal(c.certificate_file, "/etc/c1-cert.pub");
	assert_true(c.match_exec);
	sshconf_free(&c);
}

static void test_none_is_unset(void **state)
{
	struct sshconf c = parse("hostname h\nproxyjump none\nproxycommand none\n", "");

	(void)state;
	assert_null(c.proxy_jump);
	assert_null(c.proxy_command);
	sshconf_free(&c);
}

static void test_policies(void **state)
{
	static const char *const cases[][2] = {
	    {"true", "yes"},
	    {"ask", "yes"},
	    {"false", "no"},
	    {"accept-new", "accept-new"},
	};
	char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sshconf c;

		snprintf(out, sizeof(out), "stricthostkeychecking %s\n", cases[i][0]);
		c = parse(out, "");
		assert_string_equal(sshconf_host_key_policy(&c), cases[i][1]);
		sshconf_free(&c);
	}
	{
		struct sshconf c = parse("stricthostkeychecking sometimes\n", "");

		assert_null(sshconf_host_key_policy(&c));
		sshconf_free(&c);
	}
}

/* ssh's own complaint (bad option, unreadable file) is kept; -v lines and banners are not. */
static void test_message(void **state)
{
	struct sshconf c = parse("", "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19\n"
				     "debug1: Reading configuration data cfg\n"
				     "cfg: line 3: Bad configuration option: nosuchoption\r\n"
				     "cfg: terminating, 1 bad configuration options\n");

	(void)state;
	assert_string_equal(c.message, "cfg: line 3: Bad configuration option: nosuchoption");
	assert_null(c.hostname);
	sshconf_free(&c);
}

static void test_first_value_wins_and_junk(void **state)
{
	struct sshconf c = parse("hostname first\nhostname second\nport 99999\nport\n"
				 "serveraliveinterval x\n\n   \nnovalue\nuserknownhostsfile none\n",
				 "");

	(void)state;
	assert_string_equal(c.hostname, "first");
	assert_int_equal(c.port, 0);
	assert_int_equal(c.alive_interval, 0);
	assert_null(c.known_hosts_file);
	sshconf_free(&c);
}

/* Repeated keywords stop at their limits instead of growing without bound. */
static void test_limits(void **state)
{
	size_t size = 64 * 1024, used = 0;
	char *out = malloc(size);
	struct sshconf c;

	(void)state;
	assert_non_null(out);
	for (int i = 0; i < 400; i++) {
		used += (size_t)snprintf(out + used, size - used, "identityfile /k%d\n", i);
		used +=
		    (size_t)snprintf(out + used, size - used, "localforward %d [h]:1\n", 1000 + i);
	}
	c = parse(out, "");
	assert_int_equal(c.n_identity_files, SSHCONF_FILES_MAX);
	assert_int_equal(c.n_local_forwards, SSHCONF_FORWARDS_MAX);
	assert_string_equal(c.local_forwards[0], "1000 h:1");
	sshconf_free(&c);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_forwards_unbracketed),
	    cmocka_unit_test(test_unknown_alias),
	    cmocka_unit_test(test_known_by_hostname),
	    cmocka_unit_test(test_known_by_pattern),
	    cmocka_unit_test(test_refused_settings),
	    cmocka_unit_test(test_none_is_unset),
	    cmocka_unit_test(test_policies),
	    cmocka_unit_test(test_message),
	    cmocka_unit_test(test_first_value_wins_and_junk),
	    cmocka_unit_test(test_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
