/* ops.h — what every long-running program shows its operators: /metrics in
 * Prometheus text format 0.0.4, /healthz (alive) and /readyz (ready for
 * traffic), and the Prometheus text writer they all use.
 *
 * The processors and the sinks serve these on a port of their own
 * (ops_start(): PROMO_METRICS_PORT, on loopback unless PROMO_METRICS_BIND is
 * `any`); ingest serves them on its API port through its own router, with the
 * same writer and the same answers. One answer format everywhere:
 *
 *   /healthz  200 {"status":"ok"} while the process runs (a program waiting
 *             for a server is alive);
 *   /readyz   200 {"status":"ready"}, or 503 {"status":"<why not>"}; ingest
 *             adds the checks it made ({"status":..., "checks":{...}}).
 *
 * The writer keeps families well-formed: prom_family() writes a family's
 * HELP and TYPE once, then its samples follow. Histograms are prom_hist,
 * observed from any thread without a lock.
 */
#ifndef PROMO_OPS_H
#define PROMO_OPS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>

#define OPS_HEALTHZ_BODY "{\"status\":\"ok\"}"
#define OPS_READY_BODY "{\"status\":\"ready\"}"
#define OPS_STARTING_BODY "{\"status\":\"starting\"}"

/* ---- the Prometheus text writer ---- */

/* The exposition being written: a growing buffer. */
typedef struct prom {
    FILE *f;
    char *buf;
    size_t len;
} prom;

/* Returns 0, or -1 when out of memory. */
int prom_open(prom *p);
/* Ends the text and hands it over: *out (caller frees with free()) and its
 * length. Returns 0, or -1 when memory ran out while writing (nothing is
 * handed over then). */
int prom_close(prom *p, char **out, size_t *len);

/* # HELP and # TYPE of a family; type is "counter", "gauge" or "histogram". */
void prom_family(prom *p, const char *name, const char *type, const char *help);
/* One sample. labels is NULL or the inside of the braces, already escaped
 * (a="x",b="y"): the callers' label values are identifiers and fixed words. */
void prom_u64(prom *p, const char *name, const char *labels, unsigned long long v);
void prom_i64(prom *p, const char *name, const char *labels, long long v);
void prom_f64(prom *p, const char *name, const char *labels, double v);
/* A family of one unlabelled sample. */
void prom_counter(prom *p, const char *name, const char *help, unsigned long long v);
void prom_gauge(prom *p, const char *name, const char *help, long long v);

#define PROM_HIST_MAX 16 /* upper bounds a histogram may have */

/* A histogram with fixed upper bounds. Counts are per bucket (not
 * cumulative); bucket[n] counts what lies above the last bound. The sum is
 * kept in millionths of the unit, so seconds are summed in microseconds. */
typedef struct prom_hist {
    const double *le; /* n ascending upper bounds, static */
    size_t n;
    atomic_ullong bucket[PROM_HIST_MAX + 1];
    atomic_ullong sum_micro;
} prom_hist;

/* Any thread. */
void prom_hist_observe(prom_hist *h, double v);
/* The _bucket (cumulative, ending in +Inf), _sum and _count lines of one
 * series of the family name; labels as for prom_u64(). The family's HELP and
 * TYPE come first, from prom_family(). */
void prom_hist_write(prom *p, const char *name, const char *labels, prom_hist *h);
/* Observations so far. */
unsigned long long prom_hist_count(prom_hist *h);

/* ---- the operations server ---- */

typedef struct ops_handlers {
    /* Writes the program's metric families. CivetWeb worker thread: reads
     * atomics only. */
    void (*metrics)(prom *p, void *arg);
    /* NULL when the program is ready for traffic, else one word saying what
     * it waits for, the status of the 503 answer ("starting"). NULL: ready
     * whenever it runs. CivetWeb worker thread. */
    const char *(*not_ready)(void *arg);
    void *arg;
} ops_handlers;

typedef struct ops ops;

/* Serves /metrics, /healthz and /readyz with h on PROMO_METRICS_PORT, on
 * 127.0.0.1 unless PROMO_METRICS_BIND=any (every interface, as containers
 * need). Returns 0 with *out set (NULL when PROMO_METRICS_PORT is 0: no
 * server), or -1 with errstr filled. Caller stops it with ops_stop(). */
int ops_start(const ops_handlers *h, ops **out, char *errstr, size_t errstr_size);
void ops_stop(ops *o);

#endif
