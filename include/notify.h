#pragma once
#include <ev.h>

/*
 * sd_notify(3) for systemd Type=notify. Every function is a no-op when NOTIFY_SOCKET is
 * not set. notify_init() starts a watchdog timer at half of WATCHDOG_USEC when enabled.
 */
void notify_init(struct ev_loop *loop);
void notify_finish(struct ev_loop *loop);
void notify_ready(void);
/* Sends STATUS=... only when the text changed since the last call. */
void notify_status(const char *text);
void notify_reloading(void);
void notify_stopping(void);
