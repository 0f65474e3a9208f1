#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "status.h"

/*
 * Renderings of a status snapshot. All of them are pure: they only write to `out` and
 * return 0, or -EIO when the stream reports an error (e.g. open_memstream out of memory).
 * Strings from the snapshot are never trusted: invalid UTF-8 becomes U+FFFD, and control
 * characters are escaped (JSON, metrics) or replaced by '?' (the terminal table).
 */

/*
 * {"tunnels":[{"name":..,"state":..,"since":"2024-05-01T12:00:00Z","host":..,"port":22,
 * "user":..,"via":["ops@bastion:22",..] (proxy_jump hops, [] when
 * direct),"reconnects":0,"last_error":null,"forwards":[{"type":"local","listen":..,
 * "target":..,"active":0,"connections_total":0,"bytes_in":0,"bytes_out":0,
 * "open_failures":0,"rejected":0,"rejected_by_reason":{"max_connections":0,"down":0,
 * "memory":0}}]}],"daemon":{"pid":1234,"nofile_limit":524288,"metrics_textfile_stale":false,
 * "metrics_textfile_error":null},"memory":{"limit_bytes":..,"used_bytes":..,"peak_bytes":..,
 * "stage":"ok","by_kind":{"session":..,"window":..,"buffer":..,"socket":..}}} followed by a
 * newline; "rejected" is the sum of "rejected_by_reason"; the metrics_textfile_* are null
 * without a metrics_textfile.
 */
int status_format_json(const struct status *s, FILE *out);

/* The `moletun ctl status` table; ages are `now` (the wall clock, read when the snapshot
 * was taken) minus `since`, which the snapshot derived from the monotonic age. */
int status_format_table(const struct status *s, time_t now, FILE *out);

/* Prometheus text exposition format 0.0.4, HELP and TYPE for every family. */
int status_format_metrics(const struct status *s, FILE *out);

/* A short age: "12s", "3m12s", "2h05m", "3d04h". */
void status_format_age(uint64_t seconds, char *buf, size_t size);

/* One line for systemd's STATUS=: "2/3 tunnels up; primary: backoff (connection refused)". */
void status_format_summary(const struct status *s, char *buf, size_t size);

/* Number of tunnels in state TUNNEL_UP. */
size_t status_count_up(const struct status *s);
/* Number of tunnels up with health ok. */
size_t status_count_healthy(const struct status *s);
