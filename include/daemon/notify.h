#pragma once
#include <ev.h>

/*
 * sd_notify(3) for systemd Type=notify, without ever blocking the loop. Every function is
 * a no-op when NOTIFY_SOCKET is not set.
 *
 * libsystemd's sd_notify() sends on a blocking socket: when the manager does not read
 * (a long daemon-reload, a busy host) the sender blocks once the queue is full, and with
 * it every tunnel. So moletun speaks the datagram protocol itself on a connected,
 * non-blocking socket, and keeps what could not be sent yet, coalesced:
 *   - READY=1, RELOADING=1 and STOPPING=1 are never lost and keep their order (a newer
 *     RELOADING=1 replaces an unsent older one together with the READY=1 after it);
 *   - STATUS= keeps only the latest text;
 *   - WATCHDOG=1 is sent once however many ticks passed while the socket was full;
 *   - FDSTORE=1 messages (with their descriptor) and FDSTOREREMOVE=1 are kept in order.
 * A libev watcher sends the rest when the socket is writable again. A notifier thread
 * owning the blocking calls would need the same coalescing plus locking, and a thread
 * stuck in sendmsg() could never be stopped; a connected datagram socket reports
 * writability by itself (Linux wakes the sender when the reader drains its queue).
 *
 * notify_init() also starts a watchdog timer at half of WATCHDOG_USEC when enabled.
 */
void notify_init(struct ev_loop *loop);
void notify_finish(struct ev_loop *loop);
void notify_ready(void);
/* Sends STATUS=... only when the text changed since the last one sent or queued. */
void notify_status(const char *text);
void notify_reloading(void);
void notify_stopping(void);
/*
 * Hands a duplicate of fd to the service manager's FD store under name (FDSTORE=1,
 * FDNAME=name). 0 when sent or queued, -errno otherwise (-ENOTCONN outside systemd).
 */
int notify_fdstore(int fd, const char *name);
/*
 * Asks the service manager to close every descriptor it stores under name
 * (FDSTOREREMOVE=1, FDNAME=name). Queued behind earlier FDSTORE=1 messages, never lost.
 * 0 when sent or queued, -EINVAL for a name systemd would refuse, -ENOTCONN outside systemd.
 */
int notify_fdstore_remove(const char *name);
/* Messages not yet sent (for tests and the status of the notifier). */
unsigned notify_pending(void);
