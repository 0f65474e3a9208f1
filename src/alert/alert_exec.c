#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "alert_delivery.h"
#include "duration.h"
#include "subproc.h"

extern char **environ;

static void exec_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct alert_delivery *d = w->data;

	/* the child watcher reports once it is reaped */
	d->killed = true;
	kill(-d->pid, SIGKILL);
}

static void exec_child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	struct alert_delivery *d = w->data;
	int status = w->rstatus;
	char result[96];
	enum alert_outcome outcome = ALERT_OUTCOME_RETRY;

	ev_child_stop(loop, w);
	d->pid = 0;
	if (d->killed) {
		char limit[32];

		duration_format(d->timeout_ms, limit, sizeof(limit));
		snprintf(result, sizeof(result), "timed out after %s (killed)", limit);
	} else if (WIFEXITED(status)) {
		snprintf(result, sizeof(result), "exit status %d", WEXITSTATUS(status));
		if (WEXITSTATUS(status) == 0)
			outcome = ALERT_OUTCOME_OK;
	} else if (WIFSIGNALED(status)) {
		snprintf(result, sizeof(result), "killed by signal %d", WTERMSIG(status));
	} else {
		snprintf(result, sizeof(result), "wait status %d", status);
	}
	alert_delivery_done(d, outcome, result);
}

/* Starts the program without a shell; 0, or a positive errno from posix_spawn. */
static int exec_spawn(struct alert_delivery *d)
{
	struct alert_target *t = d->target;
	struct alerter *a = t->alerter;
	char *argv[] = {(char *)t->cfg->exec, NULL};
	posix_spawn_file_actions_t actions;
	posix_spawnattr_t attr;
	char **env = NULL;
	pid_t pid;
	int err;

	if (!ev_is_default_loop(a->loop))
		return ENOTSUP; /* ev_child needs the default loop */
	if (alert_format_env(&d->event, t->name, environ, &env) < 0)
		return ENOMEM;
	/* stdout to our stderr (the journal); its own process group, so that a timeout kills
	 * the script's children too */
	subproc_spawn_init(&actions, &attr, 2, 2);
	err = posix_spawn(&pid, t->cfg->exec, &actions, &attr, argv, env);
	subproc_spawn_finish(&actions, &attr);
	alert_env_free(env);
	if (err)
		return err;
	d->pid = pid;
	d->killed = false;
	ev_child_init(&d->child, exec_child_cb, pid, 0);
	d->child.data = d;
	ev_child_start(a->loop, &d->child);
	ev_set_cb(&d->deadline, exec_deadline_cb);
	ev_timer_set(&d->deadline, (double)d->timeout_ms / 1000.0, 0.);
	ev_timer_start(a->loop, &d->deadline);
	return 0;
}

void alert_exec_start(struct alert_delivery *d)
{
	char result[128];
	int err = exec_spawn(d);

	if (err == 0)
		return;
	snprintf(result, sizeof(result), "cannot run %s: %s", d->target->cfg->exec, strerror(err));
	alert_delivery_done(d, ALERT_OUTCOME_RETRY, result);
}

void alert_exec_abort(struct alert_delivery *d)
{
	if (d->pid > 0) {
		/* the whole process group: a script's own children go too */
		kill(-d->pid, SIGKILL);
		ev_child_stop(d->target->alerter->loop, &d->child);
		d->pid = 0;
	}
}
