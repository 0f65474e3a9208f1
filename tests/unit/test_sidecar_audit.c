#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "audit.h"
#include "audit_probe.h"
#include "sidecar_audit.h"

/* The plan of a tunnel whose one local forward targets `target` (and `remote` listens). */
static void plan_of(struct audit_plan *p, struct tunnel_config *cfg, struct forward_spec *f,
		    const char *target, bool remote, enum audit_scope scope,
		    const char *const *sockets, size_t n_sockets)
{
	char err[128];

	memset(cfg, 0, sizeof(*cfg));
	assert_int_equal(fwdspec_parse(FORWARD_LOCAL, target, &f[0], err, sizeof(err)), 0);
	cfg->n_forwards = 1;
	if (remote) {
		assert_int_equal(
		    fwdspec_parse(FORWARD_REMOTE, "8080 127.0.0.1:80", &f[1], err, sizeof(err)), 0);
		cfg->n_forwards = 2;
	}
	cfg->forwards = f;
	audit_plan_init(p, cfg, scope, sockets, n_sockets, 1.0);
}

static void kinds(const struct audit_plan *p, char *buf, size_t size)
{
	static const char *const names[] = {
	    [AUDIT_PROBE_SESSION] = "session",
	    [AUDIT_PROBE_PTY] = "pty",
	    [AUDIT_PROBE_SFTP] = "sftp",
	    [AUDIT_PROBE_NON_TARGET] = "non_target",
	    [AUDIT_PROBE_TARGETS] = "targets",
	    [AUDIT_PROBE_STREAMLOCAL] = "streamlocal",
	    [AUDIT_PROBE_TCPIP_FORWARD] = "tcpip_forward",
	    [AUDIT_PROBE_NOTE_STREAMLOCAL_FORWARD] = "note",
	};
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < p->n; i++) {
		const struct audit_probe *pr = &p->probes[i];

		used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? " " : "",
					 names[pr->kind]);
		if (pr->kind == AUDIT_PROBE_NON_TARGET)
			used += (size_t)snprintf(buf + used, size - used, ":%u", pr->port);
	}
}

/* The daemon's plan leaves out sftp (libssh2 opens its channel outside the shared open),
 * the targets (probed every probe_interval) and the note; `moletun audit`'s has them all,
 * the --socket paths after the usual ones, and non-targets that are targets left out. */
static void test_plan_scopes(void **state)
{
	static const char *const sockets[] = {"/run/db.sock"};
	struct tunnel_config cfg;
	struct forward_spec f[2];
	struct audit_plan *p = malloc(sizeof(*p));
	char got[512];

	assert_non_null(p);
	plan_of(p, &cfg, f, "5433 pg_main:5432", false, AUDIT_SCOPE_LIVE, NULL, 0);
	kinds(p, got, sizeof(got));
	assert_string_equal(got, "session pty non_target:22 non_target:1 streamlocal streamlocal "
				 "tcpip_forward");
	assert_int_equal(p->n_remote_forwards, 0);
	assert_false(audit_plan_busy(p));
	assert_true(audit_plan_wake(p) == 0);

	plan_of(p, &cfg, f, "5433 127.0.0.1:22", true, AUDIT_SCOPE_FULL, sockets, 1);
	kinds(p, got, sizeof(got));
	assert_string_equal(got, "session pty sftp non_target:1 targets streamlocal streamlocal "
				 "streamlocal tcpip_forward note");
	assert_string_equal(p->probes[7].path, "/run/db.sock");
	assert_int_equal(p->n_remote_forwards, 1);
	free(p);
}

static void add(struct audit_report *r, const char *check, const char *subject,
		enum audit_result result)
{
	audit_add(r, check, subject, result, AUDIT_FIX_KEY, "fix", "detail");
}

/* Only failures make a sidecar not hardened; warnings and skips do not. */
static void test_verdict(void **state)
{
	struct audit_report r;
	struct status_sidecar s;

	audit_report_init(&r);
	sidecar_from_report(&r, &s);
	assert_int_equal(s.state, SIDECAR_HARDENED);
	assert_true(s.checked);
	assert_int_equal(s.n_failed, 0);
	assert_string_equal(s.error, "");

	add(&r, "session", NULL, AUDIT_WARN);
	add(&r, "tcpip_forward", "127.0.0.1:0", AUDIT_SKIP);
	add(&r, "direct_tcpip", "127.0.0.1:1", AUDIT_PASS);
	sidecar_from_report(&r, &s);
	assert_int_equal(s.state, SIDECAR_HARDENED);

	add(&r, "pty", NULL, AUDIT_FAIL);
	add(&r, "direct_tcpip", "127.0.0.1:22", AUDIT_FAIL);
	sidecar_from_report(&r, &s);
	assert_int_equal(s.state, SIDECAR_NOT_HARDENED);
	assert_int_equal(s.n_failed, 2);
	assert_string_equal(s.failed[0], "pty");
	assert_string_equal(s.failed[1], "direct_tcpip 127.0.0.1:22");
	audit_report_finish(&r);
}

/* More failures than are named are still counted. */
static void test_verdict_many_failures(void **state)
{
	struct audit_report r;
	struct status_sidecar s;
	char subject[32];

	audit_report_init(&r);
	for (int i = 0; i < SIDECAR_FAILED_MAX + 3; i++) {
		snprintf(subject, sizeof(subject), "/run/%d.sock", i);
		add(&r, "direct_streamlocal", subject, AUDIT_FAIL);
	}
	sidecar_from_report(&r, &s);
	assert_int_equal(s.n_failed, SIDECAR_FAILED_MAX + 3);
	assert_string_equal(s.failed[SIDECAR_FAILED_MAX - 1], "direct_streamlocal /run/7.sock");
	audit_report_finish(&r);
}

static void test_state_names(void **state)
{
	assert_string_equal(sidecar_state_str(SIDECAR_UNKNOWN), "unknown");
	assert_string_equal(sidecar_state_str(SIDECAR_HARDENED), "hardened");
	assert_string_equal(sidecar_state_str(SIDECAR_NOT_HARDENED), "not_hardened");
	assert_string_equal(sidecar_state_str((enum sidecar_state)42), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_scopes),
	    cmocka_unit_test(test_verdict),
	    cmocka_unit_test(test_verdict_many_failures),
	    cmocka_unit_test(test_state_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
