#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libssh2.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alert.h"
#include "config.h"
#include "control.h"
#include "fd.h"
#include "fdstore.h"
#include "hostkey.h"
#include "identity.h"
#include "log.h"
#include "memacct.h"
#include "metrics_file.h"
#include "notify.h"
#include "privfile.h"
#include "reload_plan.h"
#include "sidecar_audit.h"
#include "status_format.h"
#include "tunnel.h"

struct daemon {
	struct ev_loop *loop;
	const char *config_path;
	struct config *cfg;
	struct tunnel **tunnels;
	size_t n_tunnels;
	struct control_server *control;
	struct alerter *alerter;
	struct fdstore *fdstore;      /* listening sockets, kept across restarts */
	struct listen_ops listen;     /* tunnels get their listeners from fdstore */
	struct metrics_file *metrics; /* NULL without metrics_textfile */
	ev_signal sigterm, sigint, sighup;
	ev_timer status_pace; /* runs for STATUS_PACE after the service status was updated */
	bool status_stale;    /* a tunnel changed while status_pace ran */
	ev_timer trim;	      /* runs TRIM_AFTER from the first snapshot since the last trim */
};

/*
 * A connection set-up allocates far more for a moment (key exchange, the sidecar audit)
 * than a session keeps, and a snapshot of a thousand tunnels (ctl status, the service
 * status) takes megabytes: freed, they leave holes between the blocks sessions keep that
 * still count as the daemon's private memory. TRIM_AFTER after a snapshot, the holes go
 * back to the kernel (at most one trim per TRIM_AFTER: an idle daemon does none).
 */
#define TRIM_AFTER 5.0

/*
 * The service status summarizes every tunnel, so updating it costs as much as `ctl
 * status`. A change right after another waits for the end of the pace, and all the
 * changes meanwhile make one update: 1000 tunnels coming up at once would otherwise
 * snapshot all 1000 at each of their changes.
 */
#define STATUS_PACE 0.1

static int daemon_snapshot(void *userdata, const char *name, struct status *ret)
{
	struct daemon *d = userdata;
	struct status s = {0};

	s.daemon.pid = getpid();
	fd_limit(&s.daemon.nofile_limit); /* stays 0 if it cannot be read */
	if (d->metrics) {
		int err = metrics_file_last_error(d->metrics);

		s.daemon.metrics_textfile = true;
		s.daemon.metrics_textfile_stale = metrics_file_stale(d->metrics);
		if (err)
			snprintf(s.daemon.metrics_textfile_error,
				 sizeof(s.daemon.metrics_textfile_error), "%s", strerror(-err));
	}
	status_memory_fill(&s.memory);
	if (!ev_is_active(&d->trim)) {
		ev_timer_set(&d->trim, TRIM_AFTER, 0.);
		ev_timer_start(d->loop, &d->trim);
	}
	s.tunnels = calloc(d->n_tunnels ? d->n_tunnels : 1, sizeof(*s.tunnels));
	if (!s.tunnels)
		return -ENOMEM;
	for (size_t i = 0; i < d->n_tunnels; i++) {
		if (name && strcmp(name, tunnel_config(d->tunnels[i])->name) != 0)
			continue;
		if (tunnel_snapshot(d->tunnels[i], &s.tunnels[s.n_tunnels]) < 0) {
			status_free(&s);
			return -ENOMEM;
		}
		s.n_tunnels++;
	}
	if (name && s.n_tunnels == 0) {
		status_free(&s);
		return -ENOENT;
	}
	if (!name && d->alerter && alerter_snapshot(d->alerter, &s) < 0) {
		status_free(&s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

static int daemon_snapshot_all(void *userdata, struct status *ret)
{
	return daemon_snapshot(userdata, NULL, ret);
}

/* The metrics file went stale or was written again: an alert, like a tunnel's. */
static void on_metrics_stale(void *userdata, bool stale, const char *reason, double for_seconds)
{
	struct daemon *d = userdata;

	alerter_daemon_event(d->alerter,
			     stale ? ALERT_EVENT_METRICS_STALE : ALERT_EVENT_METRICS_FRESH, reason,
			     for_seconds);
}

/*
 * Starts, moves or stops the metrics file as cfg says. A file no longer written is
 * removed, so that node_exporter does not go on serving it.
 */
static int daemon_apply_metrics(struct daemon *d, const struct config *cfg)
{
	struct metrics_file *m = d->metrics;
	const char *path = cfg->metrics_textfile;
	bool same_path = m && path && strcmp(metrics_file_path(m), path) == 0;

	if (same_path && metrics_file_interval(m) == cfg->metrics_interval_ms)
		return 0;
	/* a file no longer written (or written anew) is no longer stale */
	if (m && metrics_file_stale(m))
		on_metrics_stale(d, false, "metrics_textfile changed by a reload", 0);
	if (m && !same_path && unlink(metrics_file_path(m)) < 0 && errno != ENOENT)
		log_warn("metrics_textfile %s: cannot remove it: %s", metrics_file_path(m),
			 strerror(errno));
	metrics_file_destroy(m);
	d->metrics = NULL;
	if (!path)
		return 0;
	log_info("metrics_textfile %s: rewritten every %.3gs", path,
		 (double)cfg->metrics_interval_ms / 1000.0);
	return metrics_file_create(d->loop, path, cfg->metrics_interval_ms, daemon_snapshot_all,
				   on_metrics_stale, d, &d->metrics);
}

static void daemon_update_status(struct daemon *d)
{
	struct status s;
	char text[256];

	d->status_stale = false;
	if (daemon_snapshot(d, NULL, &s) < 0)
		return;
	status_format_summary(&s, text, sizeof(text));
	status_free(&s);
	notify_status(text);
}

static void on_trim(struct ev_loop *loop, ev_timer *w, int revents)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

/* A tunnel changed: the status now, or at the end of the pace if it runs. */
static void daemon_status_changed(struct daemon *d)
{
	if (ev_is_active(&d->status_pace)) {
		d->status_stale = true;
		return;
	}
	daemon_update_status(d);
	ev_timer_set(&d->status_pace, STATUS_PACE, 0.);
	ev_timer_start(d->loop, &d->status_pace);
}

static void on_status_pace(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct daemon *d = w->data;

	if (d->status_stale)
		daemon_status_changed(d);
}

/* Brings the alert targets in line with cfg and the tunnels' current snapshots. */
static int daemon_sync_alerts(struct daemon *d, const struct config *cfg)
{
	struct status s;
	int r = daemon_snapshot(d, NULL, &s);

	if (r < 0)
		return r;
	r = alerter_sync(d->alerter, cfg, s.tunnels, s.n_tunnels);
	status_free(&s);
	return r;
}

static void on_tunnel_state(struct tunnel *t, void *userdata)
{
	struct daemon *d = userdata;
	struct status_tunnel snap;

	if (tunnel_snapshot(t, &snap) == 0)
		alerter_tunnel_update(d->alerter, &snap);
	else
		log_err("alerts: out of memory: a change of tunnel %s was missed",
			tunnel_config(t)->name);
	free(snap.forwards);
	daemon_status_changed(d);
}

static void on_alert_test_done(void *userdata, size_t targets, size_t failed, const char *body)
{
	char header[64];

	snprintf(header, sizeof(header), "ok alerts=%zu failed=%zu", targets, failed);
	control_deferred_finish(userdata, header, body, strlen(body));
}

static int daemon_alert_test(void *userdata, const char *name, struct control_deferred *reply)
{
	struct daemon *d = userdata;

	return alerter_test(d->alerter, name, on_alert_test_done, reply);
}

static struct tunnel *daemon_find(struct daemon *d, const char *name)
{
	for (size_t i = 0; i < d->n_tunnels; i++)
		if (strcmp(tunnel_config(d->tunnels[i])->name, name) == 0)
			return d->tunnels[i];
	return NULL;
}

static int daemon_reconnect(void *userdata, const char *name)
{
	struct daemon *d = userdata;
	struct tunnel *t;

	if (!name) {
		for (size_t i = 0; i < d->n_tunnels; i++)
			tunnel_reconnect(d->tunnels[i], "reconnect requested");
		return 0;
	}
	t = daemon_find(d, name);
	if (!t)
		return -ENOENT;
	tunnel_reconnect(t, "reconnect requested");
	return 0;
}

static void warn_config(const struct config *c)
{
	struct diag warnings;

	diag_init(&warnings);
	config_warnings(c, &warnings);
	for (size_t i = 0; i < warnings.count; i++)
		log_warn("%s", warnings.messages[i]);
	diag_finish(&warnings);
}

/* Starts a tunnel with its identity already loaded (taken over, also on failure). */
/*
 * Narrows each strict tunnel's known_hosts digest, while the new configuration is still
 * being built, to the lines that can decide its server's or a bastion's key: several
 * tunnels often share one file, and a line added for another host must not restart them
 * (dropping every connection they carry). Where the file cannot be read again now, the
 * whole-file digest config_load() took stays: a change then restarts the tunnel, as before.
 */
static void daemon_digest_known_hosts(struct config *c)
{
	for (size_t i = 0; i < c->n_tunnels; i++) {
		struct tunnel_config *t = &c->tunnels[i];
		struct hostkey_dest dests[1 + JUMP_HOPS_MAX];
		struct privfile_result res;
		size_t n = 0;
		int fd;

		if (t->strict_host_key_checking != HOST_KEY_STRICT || !t->known_hosts_file)
			continue;
		dests[n++] = (struct hostkey_dest){t->host, t->port};
		for (size_t h = 0; h < t->n_jump_hops && n < sizeof(dests) / sizeof(dests[0]); h++)
			dests[n++] = (struct hostkey_dest){t->jump_hops[h].host, t->jump_hops[h].port};
		fd = privfile_open(t->known_hosts_file, O_RDONLY, PRIVFILE_MODE_TRUSTED, &res);
		if (fd < 0)
			continue;
		if (hostkey_relevant_digest(fd, dests, n, &t->known_hosts_file_digest) < 0)
			log_warn("tunnel %s: known_hosts file %s: cannot read it again: any change "
				 "to it restarts the tunnel",
				 t->name, t->known_hosts_file);
		close(fd);
	}
}

/* Starts a created tunnel, with its sidecar audit. */
static void daemon_start_tunnel(struct daemon *d, struct tunnel *t)
{
	if (sidecar_audit_attach(d->loop, t) < 0)
		log_err("tunnel %s: out of memory: the sidecar is not audited",
			tunnel_config(t)->name);
	tunnel_start(t);
}

static int daemon_add_tunnel(struct daemon *d, const struct tunnel_config *tc, struct identity *id)
{
	struct tunnel *t;
	char err[512];
	int r;

	r = tunnel_create(d->loop, tc, id, &d->listen, on_tunnel_state, d, &t, err, sizeof(err));
	if (r < 0) {
		log_err("tunnel %s: %s", tc->name, err);
		return r;
	}
	d->tunnels[d->n_tunnels++] = t;
	return 0;
}

/* What a reload readies before it touches anything running. */
struct reload {
	struct config *next;
	struct reload_plan plan;
	struct identity *ids;	 /* per new section: decrypted for the ones that start */
	struct tunnel **tunnels; /* the daemon's next array of tunnels */
};

static void reload_discard(struct reload *rl)
{
	if (rl->ids)
		for (size_t i = 0; rl->next && i < rl->next->n_tunnels; i++)
			identity_finish(&rl->ids[i]);
	free(rl->ids);
	free(rl->tunnels);
	reload_plan_free(&rl->plan);
	config_free(rl->next);
}

/*
 * Loads (decrypts) the identity of every tunnel the plan starts: a new key that does not
 * open must fail the reload while the running tunnel still works. Returns 0, or -EINVAL
 * with every failure in `errors`.
 */
static int reload_load_identities(struct reload *rl, struct diag *errors)
{
	int failed = 0;

	for (size_t i = 0; i < rl->next->n_tunnels; i++) {
		const struct tunnel_config *tc = &rl->next->tunnels[i];
		char err[512];

		if (rl->plan.kept_from[i] != RELOAD_NONE)
			continue;
		if (identity_load(tc, &rl->ids[i], err, sizeof(err)) < 0) {
			log_err("reload: tunnel %s: %s", tc->name, err);
			diag_add(errors, tc->file, tc->line, "tunnel %s: %s", tc->name, err);
			failed = -EINVAL;
		}
	}
	return failed;
}

/*
 * The first half of a reload, which touches nothing running: the new configuration parsed
 * completely, its plan, and the keys of the tunnels to (re)start loaded. On failure
 * everything is released; a failure after RELOADING=1 sends READY=1 again.
 */
static int reload_prepare(struct daemon *d, struct reload *rl, struct diag *errors)
{
	const struct tunnel_config **old = NULL;
	size_t n;
	int r;

	r = config_load(d->config_path, &rl->next, errors);
	if (r < 0) {
		for (size_t i = 0; i < errors->count; i++)
			log_err("reload: %s", errors->messages[i]);
		if (errors->count == 0)
			diag_add(errors, d->config_path, 0, "%s", strerror(-r));
		return -EINVAL;
	}
	notify_reloading();
	daemon_digest_known_hosts(rl->next);
	n = rl->next->n_tunnels ? rl->next->n_tunnels : 1;
	rl->tunnels = calloc(n, sizeof(*rl->tunnels));
	rl->ids = calloc(n, sizeof(*rl->ids));
	old = calloc(d->n_tunnels ? d->n_tunnels : 1, sizeof(*old));
	r = -ENOMEM;
	if (!rl->tunnels || !rl->ids || !old)
		goto fail;
	for (size_t i = 0; i < d->n_tunnels; i++)
		old[i] = tunnel_config(d->tunnels[i]);
	r = reload_plan_build(old, d->n_tunnels, rl->next, &rl->plan);
	if (r < 0)
		goto fail;
	r = reload_load_identities(rl, errors);
	if (r < 0)
		goto fail;
	free(old);
	return 0;
fail:
	free(old);
	reload_discard(rl);
	notify_ready();
	return r;
}

/*
 * Carries the plan out: kept tunnels are re-pointed at their new sections, the others
 * close first (so their addresses are free), then the new array is filled in the new
 * configuration's order, starting what is not kept. Returns -EIO when a tunnel could not
 * start (said in `errors`): applied, but not completely.
 */
static int reload_swap(struct daemon *d, struct reload *rl, struct diag *errors)
{
	struct tunnel **old = d->tunnels;
	int r = 0;

	for (size_t i = 0; i < rl->plan.n_old; i++) {
		const struct reload_old *o = &rl->plan.old[i];

		if (o->verdict == RELOAD_KEEP) {
			tunnel_set_config(old[i], &rl->next->tunnels[o->kept_as]);
			continue;
		}
		if (o->verdict == RELOAD_RESTART)
			log_info("tunnel %s: %s%s changed, restarting", tunnel_config(old[i])->name,
				 o->changed, o->contents ? " contents" : "");
		else
			log_info("tunnel %s: removed", tunnel_config(old[i])->name);
		tunnel_destroy(old[i]);
	}
	d->tunnels = rl->tunnels;
	rl->tunnels = NULL;
	d->n_tunnels = 0;
	for (size_t j = 0; j < rl->plan.n_next; j++) {
		const struct tunnel_config *tc = &rl->next->tunnels[j];

		if (rl->plan.kept_from[j] != RELOAD_NONE) {
			d->tunnels[d->n_tunnels++] = old[rl->plan.kept_from[j]];
			continue;
		}
		if (daemon_add_tunnel(d, tc, &rl->ids[j]) < 0) {
			diag_add(errors, tc->file, tc->line, "tunnel %s could not start (see log)",
				 tc->name);
			r = -EIO;
			continue;
		}
		daemon_start_tunnel(d, d->tunnels[d->n_tunnels - 1]);
	}
	free(old);
	/* the identities now belong to the tunnels (or were released by a failed create) */
	free(rl->ids);
	rl->ids = NULL;
	return r;
}

/*
 * The daemon-wide settings of `cfg`, at start and at every reload: log level, window
 * budget, warnings, alert targets and the metrics textfile. Returns 0 or -ENOMEM (logged).
 */
static int daemon_apply_settings(struct daemon *d, const struct config *cfg)
{
	int r = 0;

	log_set_level(cfg->log_level);
	tunnel_set_window_budget(cfg->window_budget);
	memacct_set_limit(cfg->memory_limit);
	warn_config(cfg);
	if (daemon_sync_alerts(d, cfg) < 0) {
		log_err("alerts: out of memory applying the configuration");
		r = -ENOMEM;
	}
	if (daemon_apply_metrics(d, cfg) < 0) {
		log_err("metrics_textfile: out of memory applying the configuration");
		r = -ENOMEM;
	}
	return r;
}

/*
 * Applies a new configuration: unchanged tunnels keep their sessions and clients (they
 * are re-pointed at the new config), changed ones restart, removed ones close, new ones
 * start. The new config is parsed completely, and the keys of the tunnels to (re)start are
 * loaded and decrypted, before anything is touched: a rotated key that does not open fails
 * the reload and the running tunnel carries on. The file digests are taken before the key
 * is read again, so a key replaced in between is never missed: at worst it restarts its
 * tunnel once more at the next reload. A restarted tunnel gets its listeners back from
 * the fdstore: clients wait in the backlog meanwhile.
 */
static int daemon_reload(void *userdata, struct diag *errors)
{
	struct daemon *d = userdata;
	struct reload rl = {0};
	int r;

	log_info("reloading %s", d->config_path);
	r = reload_prepare(d, &rl, errors);
	if (r < 0) {
		if (r == -EINVAL)
			log_err("reload failed: keeping the running configuration");
		return r;
	}
	r = reload_swap(d, &rl, errors);
	/* Listeners of removed forwards, or of ones whose address changed, close now. */
	fdstore_prune(d->fdstore);
	if (strcmp(rl.next->control_socket, d->cfg->control_socket) != 0)
		log_notice("control_socket changed: takes effect at the next restart");
	/* alert targets may have changed too; before the old config goes */
	daemon_apply_settings(d, rl.next);
	config_free(d->cfg);
	d->cfg = rl.next;
	rl.next = NULL;
	reload_discard(&rl);
	notify_ready();
	daemon_update_status(d);
	log_info("reloaded: %zu tunnel%s", d->n_tunnels, d->n_tunnels == 1 ? "" : "s");
	return r;
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct diag errors;

	diag_init(&errors);
	daemon_reload(w->data, &errors);
	diag_finish(&errors);
}

static void on_stop(struct ev_loop *loop, ev_signal *w, int revents)
{
	log_info("received %s, stopping", strsignal(w->signum));
	notify_stopping();
	ev_break(loop, EVBREAK_ALL);
}

/* Raises the descriptor limit as far as the hard limit allows, and logs it once. */
static void daemon_raise_fd_limit(void)
{
	uint64_t limit, before;
	int r = fd_raise_limit(&limit, &before);

	if (r < 0) {
		if (fd_limit(&limit) == 0)
			log_warn("cannot raise descriptor limit %" PRIu64 ": %s", limit,
				 strerror(-r));
		return;
	}
	if (limit > before)
		log_info("descriptor limit %" PRIu64 " (raised from %" PRIu64 ")", limit, before);
	else
		log_info("descriptor limit %" PRIu64, limit);
}

static void daemon_finish(struct daemon *d)
{
	metrics_file_destroy(d->metrics);
	for (size_t i = 0; i < d->n_tunnels; i++)
		tunnel_destroy(d->tunnels[i]);
	free(d->tunnels);
	control_server_destroy(d->control);
	alerter_destroy(d->alerter);
	fdstore_destroy(d->fdstore);
	if (d->loop) {
		ev_timer_stop(d->loop, &d->status_pace);
		ev_timer_stop(d->loop, &d->trim);
		ev_signal_stop(d->loop, &d->sigterm);
		ev_signal_stop(d->loop, &d->sigint);
		ev_signal_stop(d->loop, &d->sighup);
		notify_finish(d->loop);
		log_detach();
	}
	config_free(d->cfg);
	libssh2_exit();
}

static int daemon_listen_open(void *userdata, const char *host, uint16_t port)
{
	struct daemon *d = userdata;

	return fdstore_listen_tcp(d->fdstore, host, port);
}

static void daemon_listen_close(void *userdata, int fd)
{
	struct daemon *d = userdata;

	fdstore_release(d->fdstore, fd);
}

/*
 * The control socket kept by the service manager is served again when it still listens
 * on control_socket; otherwise it is closed and a new one bound and handed over.
 */
static int daemon_control_create(struct daemon *d, const struct control_ops *ops)
{
	const char *path = d->cfg->control_socket;
	int fd = fdstore_take(d->fdstore, FDSTORE_CONTROL);
	int r;

	if (fd >= 0) {
		r = control_server_adopt(d->loop, fd, path, d->cfg->control_group, ops,
					 &d->control);
		if (r == 0)
			return 0;
		log_info("control socket from the service manager not reused (%s): binding %s",
			 strerror(-r), path);
		close(fd);
		notify_fdstore_remove(FDSTORE_CONTROL);
	}
	r = control_server_create(d->loop, path, d->cfg->control_group, ops, &d->control);
	if (r < 0)
		return r;
	if (notify_fdstore(control_server_fd(d->control), FDSTORE_CONTROL) == 0)
		control_server_keep_path(d->control);
	return 0;
}

/* Loads the configuration at start; logs every error. 0 or -EINVAL. */
static int daemon_load_config(struct daemon *d)
{
	struct diag diags;
	int r;

	diag_init(&diags);
	r = config_load(d->config_path, &d->cfg, &diags);
	for (size_t i = 0; i < diags.count; i++)
		log_err("%s", diags.messages[i]);
	diag_finish(&diags);
	if (r < 0)
		log_err("cannot start: invalid configuration %s", d->config_path);
	return r < 0 ? -EINVAL : 0;
}

/* Creates (does not start) every configured tunnel, with its decrypted key. */
static int daemon_create_tunnels(struct daemon *d)
{
	d->tunnels = calloc(d->cfg->n_tunnels ? d->cfg->n_tunnels : 1, sizeof(*d->tunnels));
	if (!d->tunnels)
		return -ENOMEM;
	for (size_t i = 0; i < d->cfg->n_tunnels; i++) {
		const struct tunnel_config *tc = &d->cfg->tunnels[i];
		struct identity id;
		char err[512];
		int r = identity_load(tc, &id, err, sizeof(err));

		if (r < 0) {
			log_err("tunnel %s: %s", tc->name, err);
			return r;
		}
		r = daemon_add_tunnel(d, tc, &id);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Everything up to the loop: each step logs its own failure; 0 or -errno. */
static int daemon_setup(struct daemon *d, struct control_ops *ops)
{
	int r;

	if (libssh2_init(0) != 0) {
		log_err("cannot initialize libssh2");
		return -EIO;
	}
	daemon_digest_known_hosts(d->cfg);
	d->loop = ev_default_loop(EVFLAG_AUTO);
	log_attach(d->loop);
	ev_init(&d->status_pace, on_status_pace);
	d->status_pace.data = d;
	ev_init(&d->trim, on_trim);
	d->listen = (struct listen_ops){
	    .userdata = d,
	    .open = daemon_listen_open,
	    .close = daemon_listen_close,
	};
	r = fdstore_create(&d->fdstore);
	if (r < 0) {
		log_err("out of memory");
		return r;
	}
	r = daemon_create_tunnels(d);
	if (r < 0)
		return r;
	r = alerter_create(d->loop, &d->alerter);
	if (r < 0) {
		log_err("cannot set up alerts: %s", strerror(-r));
		return r;
	}
	ops->userdata = d;
	r = daemon_control_create(d, ops);
	if (r < 0) {
		log_err("control socket %s: %s (set control_socket = in [moletun])",
			d->cfg->control_socket, strerror(-r));
		return r;
	}
	r = daemon_apply_settings(d, d->cfg);
	if (r < 0)
		return r;
	/* What the service manager kept that is no longer configured. */
	fdstore_prune(d->fdstore);
	ev_signal_init(&d->sigterm, on_stop, SIGTERM);
	ev_signal_init(&d->sigint, on_stop, SIGINT);
	ev_signal_init(&d->sighup, on_sighup, SIGHUP);
	d->sighup.data = d;
	ev_signal_start(d->loop, &d->sigterm);
	ev_signal_start(d->loop, &d->sigint);
	ev_signal_start(d->loop, &d->sighup);
	notify_init(d->loop);
	return 0;
}

static int daemon_run(const char *config_path)
{
	static const struct control_ops ops = {
	    .snapshot = daemon_snapshot,
	    .reconnect = daemon_reconnect,
	    .reload = daemon_reload,
	    .alert_test = daemon_alert_test,
	};
	struct control_ops bound = ops;
	struct daemon d = {.config_path = config_path};

	signal(SIGPIPE, SIG_IGN);
	if (daemon_load_config(&d) < 0)
		return 1;
	daemon_raise_fd_limit();
	if (daemon_setup(&d, &bound) < 0) {
		daemon_finish(&d);
		return 1;
	}
	log_notice("moletun started: %zu tunnel%s, control socket %s", d.n_tunnels,
		   d.n_tunnels == 1 ? "" : "s", d.cfg->control_socket);
	for (size_t i = 0; i < d.n_tunnels; i++)
		daemon_start_tunnel(&d, d.tunnels[i]);
	notify_ready();
	daemon_update_status(&d);
	ev_run(d.loop, 0);
	/* A stopped daemon must not look healthy to whoever reads the file. */
	if (d.metrics)
		metrics_file_write_stopped(d.metrics);
	daemon_finish(&d);
	log_info("stopped");
	return 0;
}

int daemon_main(const char *config_path)
{
	int r;

	log_init(LOG_INFO);
	r = daemon_run(config_path);
	/* Bounded: a stalled log reader must not hold up the exit either. */
	log_finish(1.0);
	return r;
}
