/* util.h — small things every program needs: configuration from PROMO_*
 * environment variables, one-line logs, clocks, sleeping and backing off,
 * and the stop signals.
 *
 * Logs go to stderr, one line per event: time, level, program, message. The
 * program name is set once at start with log_init().
 */
#ifndef PROMO_UTIL_H
#define PROMO_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

void log_init(const char *program);
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_info(...) log_msg("info", __VA_ARGS__)
#define log_warn(...) log_msg("warn", __VA_ARGS__)
#define log_error(...) log_msg("error", __VA_ARGS__)

/* Environment value or def when unset or empty. The string is the
 * environment's (or def): do not free. */
const char *cfg_str(const char *name, const char *def);
/* A secret: the variable's value, or else the contents of the file named by
 * <name>_FILE (a final newline dropped), so secrets need not sit in the
 * environment (Docker and Kubernetes secrets are files). The file is read
 * once, on the first call; the text lives until the program ends. A
 * <name>_FILE that cannot be read is fatal: the program logs it and exits,
 * rather than start with the default. Call it at start-up only. */
const char *cfg_secret(const char *name, const char *def);
long long cfg_int(const char *name, long long def);

/* The Kafka bootstrap list: PROMO_KAFKA_BOOTSTRAP, else the first line of the
 * file named by PROMO_KAFKA_BOOTSTRAP_FILE (default var/kafka.bootstrap).
 * Returns 0 or -1 with errstr filled. */
int cfg_kafka_bootstrap(char *out, size_t out_size, char *errstr, size_t errstr_size);

/* max.in.flight.requests.per.connection for every producer we run:
 * PROMO_KAFKA_MAX_IN_FLIGHT, default 5 (safe with Apache Kafka). The local
 * fleet sets 1 for the dev broker; util.c says why. Do not free. */
const char *cfg_kafka_max_in_flight(void);

int64_t now_ms(void);  /* wall clock, ms since the epoch */
int64_t mono_ms(void); /* monotonic clock, ms */
int64_t mono_us(void); /* monotonic clock, µs (stage and request timers) */

/* Sleeps ms in full, resuming after a signal. */
void sleep_ms(int ms);

/* Sleeps ms in steps of at most 50 ms and returns early once *stop is set, so
 * a retry loop's wait never holds up a shutdown. */
void nap_ms(int ms, volatile sig_atomic_t *stop);

/* The retry loops of every program (MySQL, Redis, Kafka, dead letters) wait
 * BACKOFF_MIN_MS after the first failure and double up to BACKOFF_MAX_MS:
 * quick when a server blips, gentle when it is down for good. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
int backoff_next(int ms);

/* SIGTERM and SIGINT set *stop (which must outlive the program's run);
 * SIGPIPE is ignored, so a peer that hangs up is an error code, not death.
 * Call once from main() before any thread starts. */
void signals_on_stop(volatile sig_atomic_t *stop);

/* Coverage builds only (PROMO_COVERAGE_FLUSH, set by `make coverage`): writes
 * the gcov counters out at most once a second. The tests SIGKILL processors on
 * purpose, and a killed process never reaches the exit handler that writes
 * them, so without this the report would miss whatever such a process ran,
 * recovery paths above all. Call it from a program's main loop; in every
 * other build it is nothing. */
#ifdef PROMO_COVERAGE_FLUSH
void coverage_flush_tick(void);
#else
static inline void coverage_flush_tick(void) {}
#endif

#endif
