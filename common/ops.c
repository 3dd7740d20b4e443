/* ops.c — the Prometheus text writer and the operations server (ops.h).
 *
 * The server is a small CivetWeb instance with two worker threads: scrapes
 * and probes are rare, and they must not compete with the program's own
 * threads. Its handlers run on those workers and touch the program only
 * through the callbacks it registered, which read atomics.
 */
#include "ops.h"

#include <civetweb.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- the Prometheus text writer ---- */

int prom_open(prom *p) {
    p->buf = NULL;
    p->len = 0;
    p->f = open_memstream(&p->buf, &p->len);
    return p->f ? 0 : -1;
}

int prom_close(prom *p, char **out, size_t *len) {
    int bad = ferror(p->f);
    if (fclose(p->f) != 0) bad = 1;
    p->f = NULL;
    if (bad) {
        free(p->buf);
        p->buf = NULL;
        return -1;
    }
    *out = p->buf;
    *len = p->len;
    p->buf = NULL;
    return 0;
}

void prom_family(prom *p, const char *name, const char *type, const char *help) {
    fprintf(p->f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name, or name{labels} */
static void series(prom *p, const char *name, const char *labels) {
    if (labels && *labels)
        fprintf(p->f, "%s{%s} ", name, labels);
    else
        fprintf(p->f, "%s ", name);
}

void prom_u64(prom *p, const char *name, const char *labels, unsigned long long v) {
    series(p, name, labels);
    fprintf(p->f, "%llu\n", v);
}

void prom_i64(prom *p, const char *name, const char *labels, long long v) {
    series(p, name, labels);
    fprintf(p->f, "%lld\n", v);
}

void prom_f64(prom *p, const char *name, const char *labels, double v) {
    series(p, name, labels);
    fprintf(p->f, "%.6f\n", v);
}

void prom_counter(prom *p, const char *name, const char *help, unsigned long long v) {
    prom_family(p, name, "counter", help);
    prom_u64(p, name, NULL, v);
}

void prom_gauge(prom *p, const char *name, const char *help, long long v) {
    prom_family(p, name, "gauge", help);
    prom_i64(p, name, NULL, v);
}

void prom_hist_observe(prom_hist *h, double v) {
    size_t b = 0;
    while (b < h->n && v > h->le[b]) b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    if (v > 0) atomic_fetch_add_explicit(&h->sum_micro, (unsigned long long)llround(v * 1e6), memory_order_relaxed);
}

unsigned long long prom_hist_count(prom_hist *h) {
    unsigned long long n = 0;
    for (size_t b = 0; b <= h->n; b++) n += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    return n;
}

void prom_hist_write(prom *p, const char *name, const char *labels, prom_hist *h) {
    const char *sep = labels && *labels ? "," : "";
    if (!labels) labels = "";
    /* Counts are read bucket by bucket while observers go on, so _count is
     * the sum of what was read: the +Inf bucket always equals it. */
    unsigned long long cum = 0;
    for (size_t b = 0; b <= h->n; b++) {
        cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
        if (b < h->n)
            fprintf(p->f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->le[b], cum);
        else
            fprintf(p->f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, cum);
    }
    double sum = (double)atomic_load_explicit(&h->sum_micro, memory_order_relaxed) / 1e6;
    if (*labels) {
        fprintf(p->f, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, sum, name, labels, cum);
    } else {
        fprintf(p->f, "%s_sum %.6f\n%s_count %llu\n", name, sum, name, cum);
    }
}

/* ---- the operations server ---- */

struct ops {
    struct mg_context *ctx;
    ops_handlers h;
};

static int answer(struct mg_connection *conn, int status, const char *type, const char *body, size_t len) {
    mg_printf(conn, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
              mg_get_response_code_text(conn, status), type, len);
    mg_write(conn, body, len);
    return status;
}

/* CivetWeb worker thread. */
static int metrics_handler(struct mg_connection *conn, void *cbdata) {
    ops *o = cbdata;
    prom p;
    char *text;
    size_t len;
    if (prom_open(&p) != 0) return answer(conn, 500, "text/plain", "out of memory\n", 14);
    o->h.metrics(&p, o->h.arg);
    if (prom_close(&p, &text, &len) != 0) return answer(conn, 500, "text/plain", "out of memory\n", 14);
    int rc = answer(conn, 200, "text/plain; version=0.0.4", text, len);
    free(text);
    return rc;
}

/* CivetWeb worker thread. */
static int healthz_handler(struct mg_connection *conn, void *cbdata) {
    (void)cbdata;
    return answer(conn, 200, "application/json", OPS_HEALTHZ_BODY, strlen(OPS_HEALTHZ_BODY));
}

/* CivetWeb worker thread. */
static int readyz_handler(struct mg_connection *conn, void *cbdata) {
    ops *o = cbdata;
    const char *why = o->h.not_ready ? o->h.not_ready(o->h.arg) : NULL;
    if (!why) return answer(conn, 200, "application/json", OPS_READY_BODY, strlen(OPS_READY_BODY));
    char body[96];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\"}", why);
    return answer(conn, 503, "application/json", body, n > 0 && (size_t)n < sizeof body ? (size_t)n : 0);
}

int ops_start(const ops_handlers *h, ops **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    long long port = cfg_int("PROMO_METRICS_PORT", 0);
    if (port <= 0) return 0;
    if (port > 65535) {
        snprintf(errstr, errstr_size, "PROMO_METRICS_PORT %lld is not a port", port);
        return -1;
    }
    char ports[32];
    if (strcmp(cfg_str("PROMO_METRICS_BIND", "loopback"), "any") == 0)
        snprintf(ports, sizeof ports, "%lld", port);
    else
        snprintf(ports, sizeof ports, "127.0.0.1:%lld", port);
    ops *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    o->h = *h;
    const char *options[] = {"listening_ports", ports, "num_threads", "2", NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    o->ctx = mg_start(&cb, NULL, options);
    if (!o->ctx) {
        snprintf(errstr, errstr_size, "cannot serve metrics on %s", ports);
        free(o);
        return -1;
    }
    mg_set_request_handler(o->ctx, "/metrics", metrics_handler, o);
    mg_set_request_handler(o->ctx, "/healthz", healthz_handler, o);
    mg_set_request_handler(o->ctx, "/readyz", readyz_handler, o);
    *out = o;
    return 0;
}

void ops_stop(ops *o) {
    if (!o) return;
    mg_stop(o->ctx);
    free(o);
}
