#pragma once
#include <stdint.h>
#include <time.h>

/*
 * moletun's two clocks. Every duration and deadline (liveness, round trips, probes, window
 * epochs, backoff, debounce, the age of a state) is measured on the monotonic clock, which
 * a step of the wall clock (NTP, a VM resume, `date -s`) never moves. The wall clock only
 * prints times: log stamps, `since` as a date, alert payloads.
 *
 * libev's ev_now() and ev_time() read the wall clock: never subtract two of their values.
 * Its ev_timer delays run on the monotonic clock and are fine as they are.
 */

/* Seconds on CLOCK_MONOTONIC. Its zero is arbitrary (boot on Linux, and a fresh container
 * or time namespace may be seconds old): never read 0 as "long ago". */
double clock_now(void);

/* The same reading in milliseconds and in microseconds (sd_notify's MONOTONIC_USEC). */
int64_t clock_now_ms(void);
uint64_t clock_now_usec(void);

/* The wall clock (CLOCK_REALTIME): to print, never to measure. */
struct timespec clock_wall(void);

/* When the monotonic instant `mono` was, on the wall clock as it reads now: a state that
 * began 10 s ago began 10 s before the wall clock's "now", whatever steps happened since. */
struct timespec clock_to_wall(double mono);

/* The same from given readings of both clocks (no clock read: for tests). */
struct timespec clock_to_wall_at(double mono, double mono_now, struct timespec wall_now);
