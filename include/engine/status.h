#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "fwdspec.h"
#include "jumpspec.h"
#include "memacct.h"

enum tunnel_state {
	TUNNEL_CONNECTING,
	TUNNEL_UP,
	TUNNEL_BACKOFF,
};

/* "connecting", "up", "backoff": the stable names used in logs, JSON and metrics. */
const char *tunnel_state_str(enum tunnel_state s);

enum target_state {
	TARGET_UNKNOWN, /* no probe or client open has told yet (or not probed: remote) */
	TARGET_REACHABLE,
	TARGET_UNREACHABLE,
};

/* "unknown", "reachable", "unreachable": stable names for JSON and logs. */
const char *target_state_str(enum target_state s);

enum tunnel_health {
	HEALTH_OK,
	HEALTH_DEGRADED,    /* smoothed RTT above degraded_rtt */
	HEALTH_TARGET_DOWN, /* a forward's target is unreachable (wins over degraded) */
	HEALTH_DOWN,	    /* the tunnel is not up */
};

/* "ok", "degraded", "target_down", "down": stable names for JSON, metrics and alerts. */
const char *tunnel_health_str(enum tunnel_health h);

/*
 * Why a forward closed a client without serving it. Counted per forward whatever its kind,
 * so a remote forward counts its rejections the same way once it has limits.
 */
enum reject_reason {
	REJECT_MAX_CONNECTIONS, /* the forward already had max_connections clients */
	REJECT_DOWN,   /* the tunnel was not up: closed at once, or when down_hold ran out */
	REJECT_MEMORY, /* the daemon's memory account had no room for it (memacct.h) */
	N_REJECT_REASONS,
};

/* "max_connections", "down", "memory": the stable names used in JSON and metrics. */
const char *reject_reason_str(enum reject_reason r);

/* What the daemon's last audit of the sidecar over the tunnel's session found. */
enum sidecar_state {
	SIDECAR_UNKNOWN,      /* not audited yet (or audit_interval 0), or it could not finish */
	SIDECAR_HARDENED,     /* no check failed */
	SIDECAR_NOT_HARDENED, /* a check failed: the key can do more than its forwards */
};

/* "unknown", "hardened", "not_hardened": stable names for JSON, logs and alerts. */
const char *sidecar_state_str(enum sidecar_state s);

/* Failed checks kept per tunnel: more are counted in n_failed but not named. */
#define SIDECAR_FAILED_MAX  8
#define SIDECAR_FAILED_TEXT 160

struct status_sidecar {
	enum sidecar_state state;
	/* each "CHECK" or "CHECK SUBJECT": "session", "direct_tcpip 127.0.0.1:22" */
	char failed[SIDECAR_FAILED_MAX][SIDECAR_FAILED_TEXT];
	size_t n_failed;
	bool checked;		    /* an audit finished since the tunnel was created */
	struct timespec checked_at; /* wall clock: when the last one finished */
	char error[200];	    /* why the state is unknown ("" when an audit finished) */
};

/* Snapshots copied out of live state for the control socket; never pointers into it. */
struct status_forward {
	enum forward_kind kind;
	char listen[300]; /* "127.0.0.1:5433" */
	char target[300]; /* "pg_main:5432" */
	uint64_t active;
	uint64_t connections_total;
	uint64_t bytes_in;  /* towards the client / local side */
	uint64_t bytes_out; /* towards the SSH peer */
	uint64_t open_failures;
	uint64_t rejected[N_REJECT_REASONS];
	enum target_state target_state; /* TARGET_UNKNOWN for remote forwards */
	char target_error[256];		/* why unreachable ("" when none) */
	bool probe_rtt_measured;
	double probe_rtt; /* seconds, the last successful probe's open (+ hello) */
	uint64_t probe_failures;
	/* receive windows of its open channels, bytes: the largest and their sum */
	uint64_t window_largest;
	uint64_t window_total;
};

struct status_tunnel {
	char name[128];
	enum tunnel_state state;
	enum tunnel_health health;
	bool rtt_measured;
	double rtt;	       /* smoothed keepalive round trip, seconds */
	double rtt_last;       /* the last one */
	struct timespec since; /* wall clock at the snapshot minus the state's monotonic age */
	char host[256];
	uint16_t port;
	char user[128];
	char via[JUMP_HOPS_MAX][JUMP_HOP_TEXT_MAX]; /* proxy_jump hops, "user@host:port" */
	size_t n_via;				    /* 0: direct */
	uint64_t reconnects;
	char last_error[256]; /* "" means none */
	bool auth_failure;    /* the last failure needs a human (host key, authentication) */
	struct status_sidecar sidecar;
	struct status_forward *forwards;
	size_t n_forwards;
};

/* What an alert reports: a firing event, the one that resolves it, or a test. */
enum alert_event_kind {
	ALERT_EVENT_DOWN, /* the tunnel stayed down for down_after */
	ALERT_EVENT_UP,
	ALERT_EVENT_TARGET_DOWN, /* a local forward's target stayed unreachable */
	ALERT_EVENT_TARGET_UP,
	ALERT_EVENT_DEGRADED, /* the tunnel stayed degraded (smoothed RTT above degraded_rtt) */
	ALERT_EVENT_RECOVERED,
	ALERT_EVENT_TEST, /* moletun ctl alert-test */
	/* the daemon's own: metrics_textfile not written for METRICS_FILE_STALE_WRITES intervals */
	ALERT_EVENT_METRICS_STALE,
	ALERT_EVENT_METRICS_FRESH, /* written again */
	/* the sidecar audit found the sidecar not hardened (once per change to it) */
	ALERT_EVENT_AUDIT_FAILED,
	ALERT_EVENT_COUNT,
};

/*
 * "down", "up", "target_down", "target_up", "degraded", "recovered", "test",
 * "metrics_stale", "metrics_fresh", "audit_failed": the names used in payloads, env, logs
 * and metrics.
 */
const char *alert_event_str(enum alert_event_kind k);

/* Delivery counters of one [alert:NAME] target (kept across reloads). */
struct status_alert {
	char name[128];
	uint64_t sent[ALERT_EVENT_COUNT]; /* delivered, by event */
	uint64_t failed;		  /* given up, refused, or dropped from a full queue */
};

/* The daemon process itself. */
struct status_daemon {
	pid_t pid;
	uint64_t nofile_limit;		  /* soft RLIMIT_NOFILE: the most descriptors it may hold */
	bool metrics_textfile;		  /* one is configured: the two below mean something */
	bool metrics_textfile_stale;	  /* not written for METRICS_FILE_STALE_WRITES intervals */
	char metrics_textfile_error[128]; /* why the last write failed; "" after a success */
};

/* The daemon-wide memory account (memacct.h), bytes. */
struct status_memory {
	uint64_t limit;
	uint64_t used;
	uint64_t peak;
	uint64_t by_kind[MEMACCT_KINDS];
	enum memacct_stage stage;
};

struct status {
	struct status_daemon daemon;
	struct status_memory memory;
	struct status_tunnel *tunnels;
	size_t n_tunnels;
	struct status_alert *alerts; /* filled for the whole daemon only (no NAME asked) */
	size_t n_alerts;
};

/* Fills via and n_via from a tunnel's proxy_jump hops (at most JUMP_HOPS_MAX). */
void status_tunnel_set_via(struct status_tunnel *t, const struct jump_hop *hops, size_t n);

/* Copies the memory account (memacct.h) into m. */
void status_memory_fill(struct status_memory *m);

void status_free(struct status *s);
