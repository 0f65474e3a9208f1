#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "alert_delivery.h"
#include "alert_trust.h"
#include "duration.h"
#include "fd.h"

struct curl_sock {
	struct list link; /* in alerter->socks */
	struct alerter *alerter;
	curl_socket_t fd;
	ev_io io;
};

static unsigned curl_users;

static size_t discard_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

/* libcurl 7.88 opens its connections without SOCK_CLOEXEC; it sets O_NONBLOCK itself. */
static curl_socket_t curl_open_socket_cb(void *userdata, curlsocktype purpose,
					 struct curl_sockaddr *addr)
{
	return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

static bool header_named(const char *header, const char *name)
{
	size_t n = strlen(name);

	return strncasecmp(header, name, n) == 0 && header[n] == ':';
}

/* The configured headers, then ours unless configured. 0 or -ENOMEM. */
static int http_headers(struct alert_delivery *d)
{
	const struct alert_config *cfg = d->target->cfg;
	bool content_type = false;

	for (size_t i = 0; i < cfg->n_headers; i++) {
		struct curl_slist *l = curl_slist_append(d->headers, cfg->headers[i]);

		if (!l)
			return -ENOMEM;
		d->headers = l;
		content_type |= header_named(cfg->headers[i], "Content-Type");
	}
	if (!content_type) {
		struct curl_slist *l =
		    curl_slist_append(d->headers, "Content-Type: application/json");

		if (!l)
			return -ENOMEM;
		d->headers = l;
	}
	/* no "Expect: 100-continue" round trip */
	{
		struct curl_slist *l = curl_slist_append(d->headers, "Expect:");

		if (!l)
			return -ENOMEM;
		d->headers = l;
	}
	return 0;
}

/* Starts the transfer, to end within budget_ms. 0, -ENOMEM or -EINVAL. */
static int http_prepare(struct alert_delivery *d, uint64_t budget_ms)
{
	struct alerter *a = d->target->alerter;
	const struct alert_config *cfg = d->target->cfg;
	size_t body_len;
	CURL *e;

	if (alert_format_body(cfg->format, &d->event, &d->body, &body_len) < 0 ||
	    http_headers(d) < 0)
		return -ENOMEM;
	e = curl_easy_init();
	if (!e)
		return -ENOMEM;
	d->easy = e;
	d->errbuf[0] = '\0';
	curl_easy_setopt(e, CURLOPT_URL, cfg->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, d->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, d->headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "moletun/" MOLETUN_VERSION);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)budget_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)budget_ms);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	/* a redirect would carry the Authorization header elsewhere: treat it as a failure */
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	/* webhooks are rare: no idle connections to watch between events */
	curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
	/* removing a handle must not wait for a resolver thread (curl >= 7.87) */
	curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, curl_open_socket_cb);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, d);
	if (alert_trust_needed(cfg->url) && alert_trust_use(a->trust, e) < 0)
		return -EINVAL;
	if (curl_multi_add_handle(a->multi, e) != CURLM_OK)
		return -ENOMEM;
	return 0;
}

static void http_done(struct alert_delivery *d, CURLcode rc)
{
	char result[CURL_ERROR_SIZE + 64];
	enum alert_outcome outcome;
	long status = 0;

	if (rc == CURLE_OK) {
		curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
		snprintf(result, sizeof(result), "HTTP %ld", status);
		if (status >= 200 && status < 300)
			outcome = ALERT_OUTCOME_OK;
		else if (status >= 500 || status == 408 || status == 429)
			outcome = ALERT_OUTCOME_RETRY;
		else
			outcome = ALERT_OUTCOME_FAIL;
		alert_delivery_done(d, outcome, result);
		return;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		char limit[32];

		duration_format(d->timeout_ms, limit, sizeof(limit));
		snprintf(result, sizeof(result), "timed out after %s (%s)", limit,
			 d->errbuf[0] ? d->errbuf : curl_easy_strerror(rc));
	} else {
		snprintf(result, sizeof(result), "%s",
			 d->errbuf[0] ? d->errbuf : curl_easy_strerror(rc));
	}
	switch (rc) {
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_BAD_FUNCTION_ARGUMENT:
		outcome = ALERT_OUTCOME_FAIL;
		break;
	default:
		outcome = ALERT_OUTCOME_RETRY;
		break;
	}
	alert_delivery_done(d, outcome, result);
}

static void check_multi_info(struct alerter *a)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(a->multi, &left))) {
		struct alert_delivery *d = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&d);
		if (d)
			http_done(d, msg->data.result);
	}
}

/* libcurl's multi interface on the loop, as in curl's docs/examples/evhiperfifo.c. */

static void curl_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct curl_sock *s = w->data;
	struct alerter *a = s->alerter;
	curl_socket_t fd = s->fd; /* s may be freed by the socket callback below */
	int action =
	    (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	curl_multi_socket_action(a->multi, fd, action, &running);
	check_multi_info(a);
}

static void curl_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct alerter *a = w->data;
	int running;

	curl_multi_socket_action(a->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(a);
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct alerter *a = userp;
	struct curl_sock *s = socketp;
	int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			ev_io_stop(a->loop, &s->io);
			list_remove(&s->link);
			free(s);
		}
		return 0;
	}
	if (!s) {
		/*
		 * Not one of curl_open_socket_cb's: the read end of the socketpair curl's
		 * threaded resolver (7.88) makes without SOCK_CLOEXEC for each lookup. Both
		 * ends exist now, and the write end is never reported: mark every descriptor.
		 */
		if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
			fd_cloexec_from(3);
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->alerter = a;
		s->fd = fd;
		ev_io_init(&s->io, curl_io_cb, fd, events);
		s->io.data = s;
		list_insert_tail(&a->socks, &s->link);
		curl_multi_assign(a->multi, fd, s);
	}
	ev_io_stop(a->loop, &s->io);
	ev_io_set(&s->io, fd, events);
	ev_io_start(a->loop, &s->io);
	return 0;
}

/* Only arms the ev_timer: curl forbids calling it back from here. */
static int curl_timer_set_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct alerter *a = userp;

	ev_timer_stop(a->loop, &a->curl_timer);
	if (timeout_ms >= 0) {
		ev_timer_set(&a->curl_timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(a->loop, &a->curl_timer);
	}
	return 0;
}

static void trust_wait_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct alert_delivery *d = w->data;
	char limit[32], result[96];

	duration_format(d->timeout_ms, limit, sizeof(limit));
	snprintf(result, sizeof(result),
		 "timed out after %s waiting for the CA certificates to be read", limit);
	alert_delivery_done(d, ALERT_OUTCOME_RETRY, result);
}

/* The CA certificates are read: the HTTPS deliveries that waited go on. */
static void trust_ready_cb(void *userdata)
{
	struct alerter *a = userdata;
	struct list *pos, *tmp;

	/* a failed read with no memory left for an empty store: they wait until their timeout */
	if (!alert_trust_ready(a->trust))
		return;
	list_for_each_safe(pos, tmp, &a->trust_waiting)
	{
		struct alert_delivery *d = list_entry(pos, struct alert_delivery, trust_link);
		double left = ev_timer_remaining(a->loop, &d->deadline);

		ev_timer_stop(a->loop, &d->deadline);
		list_remove(&d->trust_link);
		/* by the target's kind: a reload may have made it another */
		alert_delivery_start(d, left > 0.001 ? (uint64_t)(left * 1000.0) : 1);
	}
}

void alert_http_start(struct alert_delivery *d, uint64_t budget_ms)
{
	struct alerter *a = d->target->alerter;
	const char *url = d->target->cfg->url;
	int r;

	if (alert_trust_needed(url) && !alert_trust_ready(a->trust)) {
		/* the read is on its way (alert_http_sync started it): wait, within the timeout */
		list_insert_tail(&a->trust_waiting, &d->trust_link);
		ev_set_cb(&d->deadline, trust_wait_cb);
		ev_timer_set(&d->deadline, (double)budget_ms / 1000.0, 0.);
		ev_timer_start(a->loop, &d->deadline);
		return;
	}
	r = http_prepare(d, budget_ms);
	if (r == 0)
		return;
	alert_delivery_done(d, ALERT_OUTCOME_RETRY,
			    r == -ENOMEM ? "out of memory"
					 : "libcurl refused the CA certificate options");
}

void alert_http_abort(struct alert_delivery *d)
{
	list_remove(&d->trust_link);
	if (d->easy) {
		curl_multi_remove_handle(d->target->alerter->multi, d->easy);
		curl_easy_cleanup(d->easy);
		d->easy = NULL;
	}
	curl_slist_free_all(d->headers);
	d->headers = NULL;
	free(d->body);
	d->body = NULL;
}

void alert_http_sync(struct alerter *a, const struct config *cfg)
{
	/* read off the loop, before the first delivery needs them; again at each reload */
	for (size_t i = 0; i < cfg->n_alerts; i++) {
		if (cfg->alerts[i].url && alert_trust_needed(cfg->alerts[i].url)) {
			alert_trust_load(a->trust);
			return;
		}
	}
}

int alert_http_init(struct alerter *a)
{
	list_init(&a->socks);
	list_init(&a->trust_waiting);
	ev_timer_init(&a->curl_timer, curl_timer_cb, 1., 0.);
	a->curl_timer.data = a;
	if (curl_users == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -ENOMEM;
	curl_users++;
	a->curl_global = true;
	a->multi = curl_multi_init();
	if (!a->multi || alert_trust_create(a->loop, trust_ready_cb, a, &a->trust) < 0)
		return -ENOMEM;
	/* its wake-up socketpair (curl 7.88) has no close-on-exec */
	fd_cloexec_from(3);
	curl_multi_setopt(a->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
	curl_multi_setopt(a->multi, CURLMOPT_SOCKETDATA, a);
	curl_multi_setopt(a->multi, CURLMOPT_TIMERFUNCTION, curl_timer_set_cb);
	curl_multi_setopt(a->multi, CURLMOPT_TIMERDATA, a);
	return 0;
}

void alert_http_finish(struct alerter *a)
{
	struct list *pos, *tmp;

	if (a->multi)
		curl_multi_cleanup(a->multi);
	a->multi = NULL;
	alert_trust_destroy(a->trust);
	a->trust = NULL;
	ev_timer_stop(a->loop, &a->curl_timer);
	list_for_each_safe(pos, tmp, &a->socks)
	{
		struct curl_sock *s = list_entry(pos, struct curl_sock, link);

		ev_io_stop(a->loop, &s->io);
		list_remove(&s->link);
		free(s);
	}
	if (a->curl_global && --curl_users == 0)
		curl_global_cleanup();
	a->curl_global = false;
}
