#include "notify.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

/* One per process, like $NOTIFY_SOCKET itself. */
static struct {
	ev_timer watchdog;
	bool watchdog_running;
	char *status; /* last STATUS= sent */
} notify;

static bool notify_enabled(void)
{
	const char *socket = getenv("NOTIFY_SOCKET");

	return socket && socket[0];
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	sd_notify(0, "WATCHDOG=1");
}

void notify_init(struct ev_loop *loop)
{
	uint64_t usec = 0;
	double interval;

	if (!notify_enabled() || notify.watchdog_running)
		return;
	/* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process. */
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return;
	/* Half the interval, as sd_watchdog_enabled(3) recommends, so one late tick is fine. */
	interval = (double)usec / 2e6;
	ev_timer_init(&notify.watchdog, watchdog_cb, interval, interval);
	ev_timer_start(loop, &notify.watchdog);
	notify.watchdog_running = true;
}

void notify_finish(struct ev_loop *loop)
{
	if (notify.watchdog_running) {
		ev_timer_stop(loop, &notify.watchdog);
		notify.watchdog_running = false;
	}
	free(notify.status);
	notify.status = NULL;
}

void notify_ready(void)
{
	if (notify_enabled())
		sd_notify(0, "READY=1");
}

void notify_status(const char *text)
{
	char *last, *line;

	if (!notify_enabled() || (notify.status && strcmp(notify.status, text) == 0))
		return;
	last = strdup(text);
	line = strdup(text);
	if (last && line) {
		/* A newline would end STATUS= and start another assignment. */
		for (char *p = line; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = ' ';
		sd_notifyf(0, "STATUS=%s", line);
		free(notify.status);
		notify.status = last;
		last = NULL;
	}
	free(last);
	free(line);
}

void notify_reloading(void)
{
	struct timespec ts;

	if (!notify_enabled())
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
		   (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
}

void notify_stopping(void)
{
	if (notify_enabled())
		sd_notify(0, "STOPPING=1");
}
