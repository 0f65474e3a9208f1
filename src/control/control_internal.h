#pragma once
/*
 * What control.c (the listening socket: bind, adopt, accept, evict) and control_client.c
 * (one client: read a request, check who may ask it, dispatch, reply) share. Private to
 * src/control/.
 */
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "control.h"
#include "control_proto.h"
#include "list.h"

#define ACCEPT_BATCH	  64  /* accepts per wakeup, so a flood cannot starve tunnels */
#define ACCEPT_RETRY_SEC  1.0 /* pause after EMFILE instead of spinning on the listener */
#define DRAIN_MAX	  (256 << 10)
#define FULL_LOG_SEC	  1.0 /* evictions and refusals: one log line at most this often */
#define NO_PEER_UID	  ((uid_t)-1)
#define PEER_GROUPS_FIRST 64

struct control_client {
	struct control_server *server;
	struct list link; /* in server->reading until the request is complete, then answering */
	int fd;
	ev_io io;
	ev_timer timeout;
	struct ucred peer; /* uid NO_PEER_UID when SO_PEERCRED failed */
	char in[CONTROL_REQUEST_MAX];
	size_t in_len;
	char *out; /* header LF body; NULL while reading the request */
	size_t out_len, out_sent;
	struct control_deferred *deferred; /* set while waiting for a deferred reply */
};

struct control_server {
	struct ev_loop *loop;
	struct control_ops ops;
	int fd;
	ev_io accept_io;
	ev_timer accept_retry;
	char *path;	/* set once bound: destroy removes the socket file */
	bool keep_path; /* the socket outlives the process (FD store): leave the file */
	dev_t dev;
	ino_t ino;
	gid_t control_gid;
	ev_tstamp timeout;
	struct list reading;   /* clients still sending their request, oldest first */
	struct list answering; /* clients being sent a reply or waiting for a deferred one */
	size_t n_clients;
	ev_timer full_log;
	size_t n_evicted, n_refused; /* since the last log line */
	uid_t evicted_uid;	     /* of the last client evicted */
};

/* A reply being built: the header text and the body stream. */
struct reply {
	char header[CONTROL_REQUEST_MAX];
	FILE *body;
	struct control_deferred *deferred; /* the handler's op will answer later */
};

enum deferred_state {
	DEFERRED_IN_HANDLER, /* the op has it; the client is not waiting on it yet */
	DEFERRED_DONE,	     /* finished within the handler: the reply is kept below */
	DEFERRED_WAITING,    /* the client waits for control_deferred_finish() */
	DEFERRED_ORPHAN,     /* the client has gone: finishing only frees */
};

struct control_deferred {
	enum deferred_state state;
	struct control_client *client; /* DEFERRED_WAITING only */
	char *header, *body;	       /* DEFERRED_DONE only */
	size_t body_len;
};

/* A new client on accepted socket `fd`, owned from here on; on failure the caller closes it.
 * 0 or -errno. */
int control_client_create(struct control_server *s, int fd);
void control_client_destroy(struct control_client *c);
/* Reads what the client sent; false when the client was destroyed meanwhile. */
bool control_client_read(struct control_client *c);
