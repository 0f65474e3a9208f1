#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "audit.h"
#include "util.h"

static const struct audit_finding *only(const struct audit_report *r)
{
	assert_int_equal(r->n, 1);
	return &r->items[0];
}

static const struct audit_finding *find(const struct audit_report *r, const char *check)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->items[i].check, check) == 0)
			return &r->items[i];
	fail_msg("no finding %s", check);
	return NULL;
}

/* The texts libssh2 1.10's _libssh2_channel_open() sets for each reason code. */
static void test_open_reasons(void **state)
{
	(void)state;
	assert_int_equal(
	    audit_open_from_message("Channel open failure (administratively prohibited)"),
	    AUDIT_OPEN_PROHIBITED);
	assert_int_equal(audit_open_from_message("Channel open failure (connect failed)"),
			 AUDIT_OPEN_CONNECT_FAILED);
	assert_int_equal(audit_open_from_message("Channel open failure (unknown channel type)"),
			 AUDIT_OPEN_UNKNOWN_TYPE);
	assert_int_equal(audit_open_from_message("Channel open failure (resource shortage)"),
			 AUDIT_OPEN_OTHER);
	assert_int_equal(audit_open_from_message("Channel open failure"), AUDIT_OPEN_OTHER);
	assert_int_equal(audit_open_from_message(NULL), AUDIT_OPEN_OTHER);
}

static struct kexinit capture(const char *name)
{
	struct kexinit k = {0};
	char path[256], *data;
	size_t len;

	snprintf(path, sizeof(path), "fuzz/corpus/kexinit/%s", name);
	assert_int_equal(read_file(path, 1 << 20, &data, &len), 0);
	assert_int_equal(kexinit_scan((uint8_t *)data, len, &k), 0);
	free(data);
	return k;
}

/* OpenSSH 9.2's defaults: only hmac-sha1 (both forms) stands out. */
static void test_algorithms_openssh_default(void **state)
{
	struct kexinit k = capture("openssh-9.2-default");
	struct audit_report r;
	const struct audit_finding *f;

	(void)state;
	audit_report_init(&r);
	audit_judge_algorithms(&r, &k);
	assert_int_equal(r.n, 4);
	assert_int_equal(find(&r, "algorithms.kex")->result, AUDIT_PASS);
	assert_int_equal(find(&r, "algorithms.ciphers")->result, AUDIT_PASS);
	/* counted once, though both directions list them */
	assert_string_equal(find(&r, "algorithms.ciphers")->detail,
			    "no CBC or broken cipher among the 6 offered");
	assert_int_equal(find(&r, "algorithms.host_key")->result, AUDIT_PASS);
	f = find(&r, "algorithms.macs");
	assert_int_equal(f->result, AUDIT_FAIL);
	assert_int_equal(f->fix_in, AUDIT_FIX_SSHD_CONFIG);
	/* both directions offer them: each named once */
	assert_string_equal(f->detail,
			    "SHA-1 or MD5 MAC offered: hmac-sha1-etm@openssh.com,hmac-sha1");
	assert_string_equal(f->fix, "sshd_config: MACs -hmac-sha1-etm@openssh.com,hmac-sha1");
	assert_string_equal(find(&r, "algorithms.kex")->fix, "");
	assert_int_equal(find(&r, "algorithms.kex")->fix_in, AUDIT_FIX_NONE);
	audit_report_finish(&r);
	kexinit_free(&k);
}

static void test_algorithms_captures(void **state)
{
	struct kexinit hard = capture("openssh-9.2-hardened"), weak = capture("openssh-9.2-weak");
	struct audit_report r;

	(void)state;
	audit_report_init(&r);
	audit_judge_algorithms(&r, &hard);
	assert_int_equal(audit_report_worst(&r), AUDIT_PASS);
	audit_report_finish(&r);
	audit_judge_algorithms(&r, &weak);
	assert_string_equal(find(&r, "algorithms.kex")->detail,
			    "SHA-1 key exchange offered: "
			    "diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha1");
	assert_string_equal(find(&r, "algorithms.ciphers")->fix,
			    "sshd_config: Ciphers -aes128-cbc,3des-cbc");
	assert_string_equal(find(&r, "algorithms.macs")->fix,
			    "sshd_config: MACs -hmac-sha1,hmac-md5");
	assert_string_equal(find(&r, "algorithms.host_key")->fix,
			    "sshd_config: HostKeyAlgorithms -ssh-rsa");
	for (size_t i = 0; i < r.n; i++)
		assert_int_equal(r.items[i].result, AUDIT_FAIL);
	audit_report_finish(&r);
	kexinit_free(&hard);
	kexinit_free(&weak);
}

/* One list at a time: which names are weak and which only look alike. */
static void test_weak_names(void **state)
{
	static const struct {
		enum kexinit_list list;
		const char *names;
		enum audit_result result;
	} cases[] = {
	    {KEXINIT_KEX, "diffie-hellman-group1-sha1", AUDIT_FAIL},
	    {KEXINIT_KEX, "gss-gex-sha1-toWM5Slw5Ew8Mqkay+al2g==", AUDIT_FAIL},
	    {KEXINIT_KEX, "diffie-hellman-group14-sha256,ext-info-s,kex-strict-s-v00@openssh.com",
	     AUDIT_PASS},
	    {KEXINIT_KEX, "curve25519-sha256,ext-info-s", AUDIT_PASS},
	    {KEXINIT_KEX, "sntrup761x25519-sha512@openssh.com,ecdh-sha2-nistp256", AUDIT_PASS},
	    {KEXINIT_CIPHER_S2C, "rijndael-cbc@lysator.liu.se", AUDIT_FAIL},
	    {KEXINIT_CIPHER_S2C, "arcfour256", AUDIT_FAIL},
	    {KEXINIT_CIPHER_C2S, "none", AUDIT_FAIL},
	    {KEXINIT_CIPHER_C2S, "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com",
	     AUDIT_PASS},
	    {KEXINIT_MAC_S2C, "hmac-sha1-96", AUDIT_FAIL},
	    {KEXINIT_MAC_S2C, "hmac-md5-etm@openssh.com", AUDIT_FAIL},
	    {KEXINIT_MAC_C2S, "hmac-sha2-256-etm@openssh.com,umac-128@openssh.com", AUDIT_PASS},
	    {KEXINIT_HOSTKEY, "ssh-rsa-cert-v01@openssh.com", AUDIT_FAIL},
	    {KEXINIT_HOSTKEY, "ssh-dss", AUDIT_FAIL},
	    {KEXINIT_HOSTKEY, "rsa-sha2-512,rsa-sha2-256,ssh-ed25519", AUDIT_PASS},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kexinit k = {0};
		struct audit_report r;

		for (size_t j = 0; j < KEXINIT_N_LISTS; j++)
			k.lists[j] = (char *)(j == cases[i].list ? cases[i].names : "");
		audit_report_init(&r);
		audit_judge_algorithms(&r, &k);
		if (audit_report_worst(&r) != cases[i].result)
			fail_msg("case %zu (%s): %s", i, cases[i].names,
				 audit_result_str(audit_report_worst(&r)));
		audit_report_finish(&r);
	}
}

static void test_host_key(void **state)
{
	struct audit_report r;

	(void)state;
	audit_report_init(&r);
	audit_judge_host_key(&r, "ssh-ed25519 SHA256:abc", true);
	audit_judge_host_key(&r, "ssh-ed25519 SHA256:abc", false);
	audit_judge_host_key(&r, "ssh-dss SHA256:abc", true);
	assert_int_equal(r.items[0].result, AUDIT_PASS);
	assert_int_equal(r.items[1].result, AUDIT_WARN);
	assert_int_equal(r.items[1].fix_in, AUDIT_FIX_MOLETUN_CONF);
	assert_string_equal(audit_fix_in_str(r.items[1].fix_in), "moletun.conf");
	assert_int_equal(r.items[2].result, AUDIT_FAIL);
	audit_report_finish(&r);
}

static void test_auth_methods(void **state)
{
	struct audit_report r;

	(void)state;
	audit_report_init(&r);
	audit_judge_auth_methods(&r, "publickey");
	assert_int_equal(only(&r)->result, AUDIT_PASS);
	audit_report_finish(&r);
	audit_judge_auth_methods(&r, "publickey,password,keyboard-interactive");
	assert_int_equal(only(&r)->result, AUDIT_FAIL);
	assert_int_equal(only(&r)->fix_in, AUDIT_FIX_SSHD_CONFIG);
	assert_non_null(strstr(only(&r)->detail, "publickey,password,keyboard-interactive"));
	audit_report_finish(&r);
	audit_judge_auth_methods(&r, NULL);
	assert_int_equal(only(&r)->result, AUDIT_FAIL);
	assert_non_null(strstr(only(&r)->detail, "without authenticating"));
	audit_report_finish(&r);
}

static void test_session(void **state)
{
	static const struct {
		struct audit_session s;
		enum audit_result result;
		enum audit_fix_in fix_in;
		const char *detail_has;
	} cases[] = {
	    {{.opened = false}, AUDIT_PASS, AUDIT_FIX_NONE, "refused"},
	    /* a shell ran it: the key line's command= fixes that even in a stock sshd */
	    {{.opened = true, .exec_accepted = true, .marker_seen = true, .ended = true},
	     AUDIT_FAIL,
	     AUDIT_FIX_KEY,
	     "can run any command"},
	    {{.opened = true, .exec_accepted = false},
	     AUDIT_WARN,
	     AUDIT_FIX_SSHD_CONFIG,
	     "refused"},
	    {{.opened = true,
	      .exec_accepted = true,
	      .ended = true,
	      .exit_status = 1,
	      .output = "This account is currently not available."},
	     AUDIT_WARN,
	     AUDIT_FIX_SSHD_CONFIG,
	     "(exit status 1, printed \"This account is currently not available.\")"},
	    {{.opened = true, .exec_accepted = true, .ended = false, .exit_status = -1},
	     AUDIT_WARN,
	     AUDIT_FIX_SSHD_CONFIG,
	     "did not end"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct audit_report r;

		audit_report_init(&r);
		audit_judge_session(&r, &cases[i].s);
		assert_string_equal(only(&r)->check, "session");
		if (only(&r)->result != cases[i].result || only(&r)->fix_in != cases[i].fix_in ||
		    !strstr(only(&r)->detail, cases[i].detail_has))
			fail_msg("case %zu: %s %d %s", i, audit_result_str(only(&r)->result),
				 only(&r)->fix_in, only(&r)->detail);
		audit_report_finish(&r);
	}
}

static void test_pty(void **state)
{
	struct audit_report r;

	(void)state;
	audit_report_init(&r);
	audit_judge_pty(&r, AUDIT_PTY_NO_SESSION);
	audit_judge_pty(&r, AUDIT_PTY_REFUSED);
	audit_judge_pty(&r, AUDIT_PTY_GRANTED);
	assert_int_equal(r.items[0].result, AUDIT_PASS);
	assert_int_equal(r.items[1].result, AUDIT_PASS);
	assert_int_equal(r.items[2].result, AUDIT_FAIL);
	assert_int_equal(r.items[2].fix_in, AUDIT_FIX_KEY);
	audit_report_finish(&r);
}

static void test_sftp(void **state)
{
	struct audit_report r;

	(void)state;
	audit_report_init(&r);
	audit_judge_sftp(&r, AUDIT_SFTP_NO_SESSION);
	audit_judge_sftp(&r, AUDIT_SFTP_REFUSED);
	audit_judge_sftp(&r, AUDIT_SFTP_ANSWERED);
	assert_int_equal(r.items[0].result, AUDIT_PASS);
	assert_int_equal(r.items[1].result, AUDIT_PASS);
	assert_int_equal(r.items[2].result, AUDIT_FAIL);
	assert_int_equal(r.items[2].fix_in, AUDIT_FIX_KEY);
	assert_non_null(strstr(r.items[2].fix, "subsystems"));
	audit_report_finish(&r);
}

static void test_direct_tcpip_and_target(void **state)
{
	static const struct {
		enum audit_open o;
		enum audit_result other, target;
	} cases[] = {
	    {AUDIT_OPENED, AUDIT_FAIL, AUDIT_PASS},
	    {AUDIT_OPEN_PROHIBITED, AUDIT_PASS, AUDIT_FAIL},
	    /* sshd tried: nothing stopped it before the connect */
	    {AUDIT_OPEN_CONNECT_FAILED, AUDIT_FAIL, AUDIT_WARN},
	    {AUDIT_OPEN_UNKNOWN_TYPE, AUDIT_PASS, AUDIT_WARN},
	    {AUDIT_OPEN_OTHER, AUDIT_WARN, AUDIT_WARN},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct audit_report r;

		audit_report_init(&r);
		audit_judge_direct_tcpip(&r, "127.0.0.1:22", cases[i].o);
		audit_judge_target(&r, "pg_main:5432", cases[i].o);
		assert_int_equal(r.items[0].result, cases[i].other);
		assert_int_equal(r.items[1].result, cases[i].target);
		assert_string_equal(r.items[0].subject, "127.0.0.1:22");
		if (r.items[0].result == AUDIT_FAIL)
			assert_int_equal(r.items[0].fix_in, AUDIT_FIX_KEY);
		if (r.items[1].result == AUDIT_FAIL)
			assert_non_null(strstr(r.items[1].fix, "permitopen=\"pg_main:5432\""));
		audit_report_finish(&r);
	}
}

static void test_forwarding_and_streamlocal(void **state)
{
	const enum audit_open prohibited[] = {AUDIT_OPEN_PROHIBITED, AUDIT_OPEN_PROHIBITED};
	const enum audit_open one_open[] = {AUDIT_OPEN_PROHIBITED, AUDIT_OPEN_CONNECT_FAILED};
	const enum audit_open unclear[] = {AUDIT_OPEN_PROHIBITED, AUDIT_OPEN_OTHER};
	struct audit_report r;

	(void)state;
	assert_int_equal(audit_forwarding_of(prohibited, 2), AUDIT_FORWARDING_RESTRICTED);
	assert_int_equal(audit_forwarding_of(one_open, 2), AUDIT_FORWARDING_UNRESTRICTED);
	assert_int_equal(audit_forwarding_of(unclear, 2), AUDIT_FORWARDING_UNKNOWN);
	assert_int_equal(audit_forwarding_of(NULL, 0), AUDIT_FORWARDING_UNKNOWN);
	audit_report_init(&r);
	audit_judge_streamlocal(&r, "/run/s", AUDIT_OPENED, AUDIT_FORWARDING_RESTRICTED);
	audit_judge_streamlocal(&r, "/run/s", AUDIT_OPEN_CONNECT_FAILED,
				AUDIT_FORWARDING_RESTRICTED);
	/* "connect failed" is also what a socket nobody listens on gets */
	audit_judge_streamlocal(&r, "/run/s", AUDIT_OPEN_CONNECT_FAILED,
				AUDIT_FORWARDING_UNRESTRICTED);
	audit_judge_streamlocal(&r, "/run/s", AUDIT_OPEN_CONNECT_FAILED, AUDIT_FORWARDING_UNKNOWN);
	assert_int_equal(r.items[0].result, AUDIT_FAIL);
	assert_int_equal(r.items[0].fix_in, AUDIT_FIX_KEY);
	assert_int_equal(r.items[1].result, AUDIT_PASS);
	assert_int_equal(r.items[2].result, AUDIT_WARN);
	assert_int_equal(r.items[3].result, AUDIT_WARN);
	audit_report_finish(&r);
}

static void test_tcpip_forward(void **state)
{
	struct audit_report r;

	(void)state;
	audit_report_init(&r);
	audit_judge_tcpip_forward(&r, "127.0.0.1:0", false, 0, 0);
	audit_judge_tcpip_forward(&r, "127.0.0.1:0", true, 40123, 0);
	audit_judge_tcpip_forward(&r, "127.0.0.1:0", true, 40124, 2);
	assert_int_equal(r.items[0].result, AUDIT_PASS);
	assert_int_equal(r.items[1].result, AUDIT_FAIL);
	assert_non_null(strstr(r.items[1].detail, "port 40123"));
	assert_non_null(strstr(r.items[1].fix, "AllowTcpForwarding local"));
	assert_non_null(strstr(r.items[2].fix, "PermitListen"));
	audit_report_finish(&r);
}

static void test_worst_and_skip(void **state)
{
	struct audit_report r;

	(void)state;
	audit_report_init(&r);
	assert_int_equal(audit_report_worst(&r), AUDIT_PASS);
	audit_note_streamlocal_forward(&r);
	assert_int_equal(only(&r)->result, AUDIT_SKIP);
	assert_int_equal(audit_report_worst(&r), AUDIT_PASS);
	audit_judge_pty(&r, AUDIT_PTY_GRANTED);
	audit_judge_session(&r, &(struct audit_session){.opened = true});
	assert_int_equal(audit_report_worst(&r), AUDIT_FAIL);
	audit_report_finish(&r);
	audit_judge_session(&r, &(struct audit_session){.opened = true});
	assert_int_equal(audit_report_worst(&r), AUDIT_WARN);
	audit_report_finish(&r);
}

static char *print(const struct audit_report *r, bool json)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	if (json)
		audit_report_print_json(r, f);
	else
		audit_report_print_text(r, f);
	fclose(f);
	return buf;
}

static void test_output(void **state)
{
	struct audit_report r;
	char *text;

	(void)state;
	audit_report_init(&r);
	audit_judge_auth_methods(&r, "publickey");
	audit_judge_direct_tcpip(&r, "127.0.0.1:1", AUDIT_OPEN_CONNECT_FAILED);
	audit_add(&r, "direct_streamlocal", "/tmp/a\nb\"c", AUDIT_PASS, AUDIT_FIX_NONE, NULL, "x");
	text = print(&r, false);
	assert_string_equal(
	    text,
	    "CHECK                                    RESULT DETAIL / FIX\n"
	    "auth_methods                             pass   offered after \"none\": publickey\n"
	    "direct_tcpip 127.0.0.1:1                 fail   not restricted: the sidecar tried "
	    "to connect (connect failed) | fix: key line: permitopen=\"TARGET\" for each "
	    "target (moletun authorize prints it); or sshd_config: PermitOpen TARGET...\n"
	    "direct_streamlocal /tmp/a?b\"c            pass   x\n");
	free(text);
	text = print(&r, true);
	assert_string_equal(
	    text,
	    "[{\"check\":\"auth_methods\",\"subject\":null,\"result\":\"pass\",\"detail\":"
	    "\"offered after \\\"none\\\": publickey\",\"fix_in\":null,\"fix\":null},"
	    "{\"check\":\"direct_tcpip\",\"subject\":\"127.0.0.1:1\",\"result\":\"fail\","
	    "\"detail\":\"not restricted: the sidecar tried to connect (connect failed)\","
	    "\"fix_in\":\"authorized_keys\",\"fix\":\"key line: permitopen=\\\"TARGET\\\" for "
	    "each target (moletun authorize prints it); or sshd_config: PermitOpen "
	    "TARGET...\"},"
	    "{\"check\":\"direct_streamlocal\",\"subject\":\"/tmp/a\\nb\\\"c\",\"result\":"
	    "\"pass\",\"detail\":\"x\",\"fix_in\":null,\"fix\":null}]");
	free(text);
	audit_report_finish(&r);
	text = print(&r, true);
	assert_string_equal(text, "[]");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open_reasons),
	    cmocka_unit_test(test_algorithms_openssh_default),
	    cmocka_unit_test(test_algorithms_captures),
	    cmocka_unit_test(test_weak_names),
	    cmocka_unit_test(test_host_key),
	    cmocka_unit_test(test_auth_methods),
	    cmocka_unit_test(test_session),
	    cmocka_unit_test(test_pty),
	    cmocka_unit_test(test_sftp),
	    cmocka_unit_test(test_direct_tcpip_and_target),
	    cmocka_unit_test(test_forwarding_and_streamlocal),
	    cmocka_unit_test(test_tcpip_forward),
	    cmocka_unit_test(test_worst_and_skip),
	    cmocka_unit_test(test_output),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
