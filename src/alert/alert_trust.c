#include "alert_trust.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/opensslv.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"

/* One read of the file: set up on the loop, filled in by the helper thread, read back on
 * the loop after pthread_join(). */
struct trust_read {
	char path[PATH_MAX];
	atomic_bool stop;  /* the alerter is going away */
	X509_STORE *store; /* NULL when the read failed */
	size_t n_certs;
	double seconds;
	char error[256];
};

struct alert_trust {
	struct ev_loop *loop;
	alert_trust_ready_cb cb;
	void *userdata;
	bool openssl;	   /* libcurl's TLS backend is the OpenSSL we link */
	X509_STORE *store; /* in use; NULL until the first read has ended */
	bool reading;
	bool thread; /* the read runs on `reader` (else it ran on the loop) */
	bool again;  /* alert_trust_load() during the read */
	pthread_t reader;
	ev_async done;
	struct trust_read read;
};

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void read_error(struct trust_read *r, const char *what)
{
	unsigned long e = ERR_peek_last_error();

	if (e)
		snprintf(r->error, sizeof(r->error), "%s: %s", what, ERR_reason_error_string(e));
	else
		snprintf(r->error, sizeof(r->error), "%s", what);
}

/* Runs on the helper thread: touches nothing but `r` (and OpenSSL's thread-safe state). */
static void read_certs(struct trust_read *r)
{
	struct timespec t0;
	unsigned long e;
	BIO *in;
	X509 *x;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* OpenSSL 3 fetches its algorithms at the first SSL_CTX_new() of the process (2 ms,
	 * 90 ms under ASan), into caches every thread shares: here rather than on the loop */
	SSL_CTX_free(SSL_CTX_new(TLS_client_method()));
	r->store = X509_STORE_new();
	if (!r->store) {
		read_error(r, "out of memory");
		return;
	}
	/* what libcurl 7.88 sets on the stores it makes (populate_x509_store) */
	X509_STORE_set_flags(r->store, X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_PARTIAL_CHAIN);
	in = BIO_new_file(r->path, "re");
	if (!in) {
		e = ERR_peek_error();
		snprintf(r->error, sizeof(r->error), "%s",
			 strerror(e && ERR_SYSTEM_ERROR(e) ? ERR_GET_REASON(e) : ENOENT));
		goto fail;
	}
	/* certificate by certificate, as X509_STORE_load_file() does, so that a stop is quick */
	while (!atomic_load(&r->stop) && (x = PEM_read_bio_X509_AUX(in, NULL, NULL, NULL))) {
		if (X509_STORE_add_cert(r->store, x))
			r->n_certs++;
		X509_free(x);
	}
	BIO_free(in);
	e = ERR_peek_last_error();
	/* the end of the file reads as "no start line" */
	if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		read_error(r, "bad certificate");
		goto fail;
	}
	if (r->n_certs == 0 && !atomic_load(&r->stop)) {
		snprintf(r->error, sizeof(r->error), "no certificate in it");
		goto fail;
	}
	ERR_clear_error();
	/* what is trusted: a certificate listed twice counts once */
	r->n_certs = (size_t)sk_X509_OBJECT_num(X509_STORE_get0_objects(r->store));
	r->seconds = seconds_since(&t0);
	return;
fail:
	ERR_clear_error();
	X509_STORE_free(r->store);
	r->store = NULL;
	r->seconds = seconds_since(&t0);
}

static void *reader_main(void *userdata)
{
	struct alert_trust *t = userdata;

	read_certs(&t->read);
	ev_async_send(t->loop, &t->done);
	return NULL;
}

static const char *trust_file(void)
{
	const char *env = getenv("SSL_CERT_FILE");
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);

	if (env && env[0])
		return env;
	if (v->cainfo)
		return v->cainfo;
	return X509_get_default_cert_file();
}

static void trust_start(struct alert_trust *t)
{
	sigset_t all, old;
	int err;

	memset(&t->read, 0, sizeof(t->read));
	snprintf(t->read.path, sizeof(t->read.path), "%s", trust_file());
	t->reading = true;
	ev_async_start(t->loop, &t->done);
	/* signals are the loop's business */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&t->reader, NULL, reader_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	t->thread = err == 0;
	if (err) {
		/* bounded (one file), and better than libcurl doing it at every reload */
		log_warn("alerts: no thread to read the CA certificates (%s): reading them now",
			 strerror(err));
		read_certs(&t->read);
		ev_async_send(t->loop, &t->done);
	}
}

static void trust_read_done(struct alert_trust *t)
{
	struct trust_read *r = &t->read;

	if (r->store) {
		log_info("alerts: %zu CA certificate%s for HTTPS read from %s in %.0f ms",
			 r->n_certs, r->n_certs == 1 ? "" : "s", r->path, r->seconds * 1e3);
		X509_STORE_free(t->store);
		t->store = r->store;
		r->store = NULL;
		return;
	}
	if (t->store) {
		log_warn("alerts: CA certificates for HTTPS: %s: %s; keeping the ones read before",
			 r->path, r->error);
		return;
	}
	log_err("alerts: CA certificates for HTTPS: %s: %s; no HTTPS webhook can be verified",
		r->path, r->error);
	t->store = X509_STORE_new();
}

static void done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct alert_trust *t = w->data;

	/* the thread's last act was to wake us: this join does not wait */
	if (t->thread)
		pthread_join(t->reader, NULL);
	t->thread = false;
	t->reading = false;
	ev_async_stop(loop, &t->done);
	trust_read_done(t);
	if (t->again) {
		t->again = false;
		trust_start(t);
	}
	t->cb(t->userdata);
}

/* The SSL_CTX callback needs the libssl that libcurl uses: the same major version. */
static bool curl_uses_our_openssl(void)
{
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	char ours[32];

	snprintf(ours, sizeof(ours), "OpenSSL/%d.", OPENSSL_VERSION_MAJOR);
	return v->ssl_version && strncmp(v->ssl_version, ours, strlen(ours)) == 0;
}

int alert_trust_create(struct ev_loop *loop, alert_trust_ready_cb cb, void *userdata,
		       struct alert_trust **ret)
{
	struct alert_trust *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->loop = loop;
	t->cb = cb;
	t->userdata = userdata;
	t->openssl = curl_uses_our_openssl();
	ev_async_init(&t->done, done_cb);
	t->done.data = t;
	*ret = t;
	return 0;
}

void alert_trust_destroy(struct alert_trust *t)
{
	if (!t)
		return;
	if (t->thread) {
		atomic_store(&t->read.stop, true);
		pthread_join(t->reader, NULL);
	}
	ev_async_stop(t->loop, &t->done);
	X509_STORE_free(t->read.store);
	X509_STORE_free(t->store);
	free(t);
}

void alert_trust_load(struct alert_trust *t)
{
	if (!t->openssl)
		return;
	if (t->reading) {
		t->again = true;
		return;
	}
	trust_start(t);
}

bool alert_trust_ready(const struct alert_trust *t)
{
	return !t->openssl || t->store;
}

bool alert_trust_needed(const char *url)
{
	return strncasecmp(url, "https://", strlen("https://")) == 0;
}

static CURLcode ssl_ctx_cb(CURL *easy, void *ssl_ctx, void *userdata)
{
	struct alert_trust *t = userdata;

	/* takes a reference: a reload may replace t->store while this transfer runs */
	SSL_CTX_set1_cert_store(ssl_ctx, t->store);
	return CURLE_OK;
}

int alert_trust_use(struct alert_trust *t, CURL *easy)
{
	if (!t->openssl)
		return 0;
	/*
	 * libcurl 7.88 reads CURLOPT_CAINFO/CAPATH into the SSL_CTX's store once the
	 * ClientHello is out, after this callback: with both NULL it only sets flags on ours.
	 * Without a CApath its CA cache (per multi handle, 24 h by default) would apply, and
	 * keep handing out the first store it saw even after a reload has read a new one: off.
	 */
	if (curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, t) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_CAINFO, NULL) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_CAPATH, NULL) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_CA_CACHE_TIMEOUT, 0L) != CURLE_OK)
		return -EINVAL;
	return 0;
}
