/* http.h — ingest's HTTP server: CivetWeb, routing, auth, rate limits,
 * metrics, /openapi.json and /api/docs.
 *
 * main.c builds an http_config from the environment, starts the server, and
 * on SIGTERM drains it and stops it. Everything a request needs after that
 * (producer, keys, limits, allow list) is fixed at start and only read by
 * the workers.
 */
#ifndef PROMO_INGEST_HTTP_H
#define PROMO_INGEST_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "notify.h"
#include "produce.h"

typedef struct http_config {
    const char *listen;        /* CivetWeb listening_ports value, e.g. "4000" or "127.0.0.1:4000" */
    int threads;               /* worker threads */
    int keep_alive_ms;         /* idle time before a keep-alive connection is closed */
    const char *api_keys;      /* "key:role,key:role"; roles admin and client */
    const char *webhook_allow; /* comma-separated callback hosts */
    bool access_log;           /* one log line per request */
    produce *producer;         /* borrowed; outlives the server */
    notify *notify;            /* borrowed, for /metrics; may be NULL */
    const char *docs_dir;      /* Swagger UI's files; NULL: the plain page only */
    /* Token buckets (0 rps = no limit): per API key, and per client address
     * on every route but the probes and /metrics. */
    double rate_key_rps, rate_key_burst;
    double rate_ip_rps, rate_ip_burst;
} http_config;

typedef struct http_server http_server;

/* Parses the keys, checks the route table against the embedded OpenAPI
 * document and starts listening. Returns NULL with errstr filled (bad key
 * list, bad limits, an undocumented route, port in use). Caller stops it
 * with http_stop(). */
http_server *http_start(const http_config *cfg, char *errstr, size_t errstr_size);

/* The first step of a graceful shutdown: from now on every new request but
 * /healthz and /metrics is answered 503 SHUTTING_DOWN with Retry-After and
 * Connection: close (/readyz included, so balancers stop sending), and this
 * waits until the requests already being handled have answered, at most
 * timeout_ms. CivetWeb cannot stop listening without also refusing to send
 * answers, hence this step before http_stop(). */
void http_drain(http_server *s, int timeout_ms);

/* Stops the server (and so the listening socket), waits for the workers to
 * return, frees. */
void http_stop(http_server *s);

#endif
