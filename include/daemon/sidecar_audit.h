#pragma once
#include <ev.h>

#include "audit.h"
#include "status.h"
#include "tunnel.h"

/*
 * The daemon's audit of a tunnel's sidecar over the tunnel's own session (audit_interval):
 * the live part of `moletun audit`'s probes (audit_probe.h, AUDIT_SCOPE_LIVE), run as the
 * tunnel's job (tunnel_job_ops) once the tunnel first comes up, then every audit_interval,
 * each bounded by the tunnel's connect_timeout. An audit cut short (timeout, session lost)
 * leaves the sidecar unknown, and one the session lost runs again when it is back. The
 * verdict goes to the tunnel (tunnel_set_sidecar), whence status, metrics and alerts.
 */

/* Gives `t` its sidecar audit, which the tunnel owns and frees (audit_interval 0: only
 * records that audits are off). Call once the daemon is set up: the tunnel's on_change
 * hears of it. 0 or -ENOMEM. */
int sidecar_audit_attach(struct ev_loop *loop, struct tunnel *t);

/* The verdict of a finished audit's report: not_hardened when a check failed, with the
 * failed checks named "CHECK" or "CHECK SUBJECT". Pure. */
void sidecar_from_report(const struct audit_report *r, struct status_sidecar *out);
