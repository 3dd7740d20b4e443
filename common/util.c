/* util.c — configuration from the environment, one-line logs, clocks,
 * sleeps and backoff, stop signals.
 *
 * Kept deliberately small: every program links it, including the dev broker.
 * Log lines are written with a single fputs of a preformatted line so lines
 * from several threads never interleave.
 */
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *log_program = "promo";

void log_init(const char *program) {
    log_program = program;
}

void log_msg(const char *level, const char *fmt, ...) {
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level, log_program);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line) vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len] = '\n';
    line[len + 1] = '\0';
    fputs(line, stderr);
}

const char *cfg_str(const char *name, const char *def) {
    const char *v = getenv(name);
    return (v && *v) ? v : def;
}

const char *cfg_secret(const char *name, const char *def) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* Redis connections open on several threads */
    static struct {
        char name[64];
        char *value; /* never freed: lives as long as the program */
    } loaded[16];
    const char *v = cfg_str(name, NULL);
    if (v) return v;
    pthread_mutex_lock(&mu);
    const char *out = def;
    size_t i = 0;
    for (; i < sizeof loaded / sizeof loaded[0] && loaded[i].value; i++)
        if (strcmp(loaded[i].name, name) == 0) {
            out = loaded[i].value;
            goto done;
        }
    char var[80];
    snprintf(var, sizeof var, "%s_FILE", name);
    const char *path = cfg_str(var, NULL);
    if (!path) goto done;
    FILE *f = fopen(path, "r");
    char *buf = f ? malloc(65536) : NULL;
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    if (!f || !buf || ferror(f) || i == sizeof loaded / sizeof loaded[0]) {
        log_error("%s: cannot read %s", var, path);
        exit(1);
    }
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
    buf[n] = '\0';
    snprintf(loaded[i].name, sizeof loaded[i].name, "%s", name);
    loaded[i].value = buf;
    out = buf;
done:
    pthread_mutex_unlock(&mu);
    return out;
}

long long cfg_int(const char *name, long long def) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*end) {
        log_warn("config %s=%s is not an integer, using %lld", name, v, def);
        return def;
    }
    return n;
}

int cfg_kafka_bootstrap(char *out, size_t out_size, char *errstr, size_t errstr_size) {
    const char *v = cfg_str("PROMO_KAFKA_BOOTSTRAP", NULL);
    if (v) {
        snprintf(out, out_size, "%s", v);
        return 0;
    }
    const char *path = cfg_str("PROMO_KAFKA_BOOTSTRAP_FILE", "var/kafka.bootstrap");
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "no PROMO_KAFKA_BOOTSTRAP and cannot read %s", path);
        return -1;
    }
    int rc = -1;
    if (fgets(out, (int)out_size, f)) {
        out[strcspn(out, "\r\n")] = '\0';
        if (*out) rc = 0;
    }
    fclose(f);
    if (rc) snprintf(errstr, errstr_size, "%s is empty", path);
    return rc;
}

/* An idempotent producer with several requests in flight relies on the broker
 * to refuse a batch whose sequence number skips a failed earlier one
 * (OUT_OF_ORDER_SEQUENCE_NUMBER): when a later batch succeeds, librdkafka
 * concludes that the earlier, failed one was written after all and reports
 * it delivered ("implicitly acked"). Apache Kafka enforces that order.
 * librdkafka 2.0.2's mock cluster checks sequences only for transactional
 * producers, so against the dev broker a batch refused by a fault (an
 * injected error, a leader move) while the next one succeeds is acknowledged
 * and never written: a command answered 202 and lost. One request in flight
 * per connection removes the "next one" and costs the dev broker little. */
const char *cfg_kafka_max_in_flight(void) {
    return cfg_str("PROMO_KAFKA_MAX_IN_FLIGHT", "5");
}

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

void nap_ms(int ms, volatile sig_atomic_t *stop) {
    while (ms > 0 && !*stop) {
        int step = ms < 50 ? ms : 50;
        sleep_ms(step);
        ms -= step;
    }
}

int backoff_next(int ms) {
    return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

/* The flag of signals_on_stop(); a signal handler can reach only globals. */
static volatile sig_atomic_t *stop_flag;

static void on_stop_signal(int sig) {
    (void)sig;
    *stop_flag = 1;
}

void signals_on_stop(volatile sig_atomic_t *stop) {
    stop_flag = stop;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

#ifdef PROMO_COVERAGE_FLUSH
/* libgcov's own entry points (GCC >= 11; there is no header for them). */
void __gcov_dump(void);
void __gcov_reset(void);

void coverage_flush_tick(void) {
    static int64_t last;
    int64_t now = mono_ms();
    if (now - last < 1000) return;
    last = now;
    /* dump adds the counters to the .gcda files (under a file lock, so the
     * processes sharing them merge safely); reset zeroes them and re-arms the
     * dump at exit, which then adds only what ran since. Counts another
     * thread makes between the two are lost: a line or two at worst, a
     * fair price for keeping everything a SIGKILL would otherwise drop. */
    __gcov_dump();
    __gcov_reset();
}
#endif
