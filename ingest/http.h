/* http.h — ingest's HTTP server: CivetWeb, routing, auth, metrics.
 *
 * main.c builds an http_config from the environment, starts the server and
 * stops it on SIGTERM. Everything a request needs after that (producer,
 * keys, allow list) is fixed at start and only read by the workers.
 */
#ifndef PROMO_INGEST_HTTP_H
#define PROMO_INGEST_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "produce.h"

typedef struct http_config {
    const char *listen;        /* CivetWeb listening_ports value, e.g. "4000" or "127.0.0.1:4000" */
    int threads;               /* worker threads */
    int keep_alive_ms;         /* idle time before a keep-alive connection is closed */
    const char *api_keys;      /* "key:role,key:role"; roles admin and client */
    const char *webhook_allow; /* comma-separated callback hosts */
    bool access_log;           /* one log line per request */
    produce *producer;         /* borrowed; outlives the server */
} http_config;

typedef struct http_server http_server;

/* Parses the keys and starts listening. Returns NULL with errstr filled (bad
 * key list, port in use). Caller stops it with http_stop(). */
http_server *http_start(const http_config *cfg, char *errstr, size_t errstr_size);

/* Stops accepting, waits for every in-flight request to finish, frees. */
void http_stop(http_server *s);

#endif
