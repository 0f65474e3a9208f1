#pragma once
#include <curl/curl.h>
#include <ev.h>
#include <stdbool.h>

/*
 * The CA certificates HTTPS webhooks are verified against: one X509_STORE, read on a
 * helper thread and handed to every transfer (CURLOPT_SSL_CTX_FUNCTION), so that libcurl
 * never reads its CA bundle itself. It would do so inside curl_multi_socket_action(), on
 * the loop, at every HTTPS transfer (Debian's libcurl has a default CApath, which keeps
 * its CA cache off): 50-150 ms for Debian's ~140 certificates, 8-12 s under
 * AddressSanitizer, while every tunnel waits.
 *
 * The file is $SSL_CERT_FILE when set (OpenSSL's variable; libcurl itself ignores it),
 * else libcurl's built-in CA bundle (curl-config --ca). Only a file: a CA present only as
 * a hashed file in a directory (libcurl's CApath) is not trusted.
 */
struct alert_trust;

/* Called on the loop when a read has ended, whatever its outcome. */
typedef void (*alert_trust_ready_cb)(void *userdata);

/* 0 or -ENOMEM; *ret untouched on failure. Reads nothing yet. */
int alert_trust_create(struct ev_loop *loop, alert_trust_ready_cb cb, void *userdata,
		       struct alert_trust **ret);
/* Stops a read in progress (after the certificate it is at) and waits for it. Accepts NULL. */
void alert_trust_destroy(struct alert_trust *t);

/*
 * Reads the certificates again in the background: at start and on every reload, so that
 * an updated bundle is taken up. The store in use, if any, serves until the new one is
 * complete. A call during a read makes another read follow it.
 */
void alert_trust_load(struct alert_trust *t);

/* Whether an HTTPS transfer can start now: a read has ended (a failed one leaves an empty
 * store, against which every verification fails), or libcurl's TLS backend is not the
 * OpenSSL moletun links (libcurl then loads its own CA file, as it always did). */
bool alert_trust_ready(const struct alert_trust *t);

/* Makes `easy` verify against the store instead of loading a CA file of its own. Call only
 * when ready. 0, or -EINVAL if libcurl refused an option. */
int alert_trust_use(struct alert_trust *t, CURL *easy);

/* Whether `url` is one that needs the store. */
bool alert_trust_needed(const char *url);
