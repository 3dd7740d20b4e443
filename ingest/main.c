/* main.c — promo-ingest: reads its configuration from PROMO_* variables,
 * starts the Kafka producer, the status stores and the HTTP server, and on
 * SIGTERM or SIGINT shuts them down in the order that loses nothing.
 *
 * Shutdown order: close the notifier (long-polls answer at once with what
 * Redis holds instead of holding the shutdown up to 30 s); drain the HTTP
 * server (new requests get 503 and the connection closed, those in flight
 * finish: a write waits for its delivery report, which the producer's poll
 * thread still delivers); stop CivetWeb; flush and free the producer; stop
 * the subscriber thread; end the MySQL client library. Exit status 0.
 */
#include <civetweb.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "docs.h"
#include "http.h"
#include "notify.h"
#include "produce.h"
#include "status.h"
#include "util.h"

static volatile sig_atomic_t stop_requested;

int main(void) {
    log_init("promo-ingest");
    char errstr[512] = "";

    char bootstrap[1024];
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, sizeof errstr)) {
        log_error("kafka bootstrap: %s", errstr);
        return 1;
    }
    long long port = cfg_int("PROMO_HTTP_PORT", 4000);
    long long threads = cfg_int("PROMO_HTTP_THREADS", 64);
    long long timeout_ms = cfg_int("PROMO_PRODUCE_TIMEOUT_MS", 5000);
    if (port < 1 || port > 65535 || threads < 1 || threads > 4096 || timeout_ms < 100) {
        log_error("bad configuration: PROMO_HTTP_PORT, PROMO_HTTP_THREADS or PROMO_PRODUCE_TIMEOUT_MS out of range");
        return 1;
    }
    /* PROMO_HTTP_BIND limits the listening address (all interfaces by default,
     * so the same binary works in a container). */
    char listen[128];
    const char *bind = cfg_str("PROMO_HTTP_BIND", NULL);
    if (bind)
        snprintf(listen, sizeof listen, "%s:%lld", bind, port);
    else
        snprintf(listen, sizeof listen, "%lld", port);

    notify *notifier = notify_start(cfg_str("PROMO_REDIS_HOST", "127.0.0.1"), (int)cfg_int("PROMO_REDIS_PORT", 6379),
                                    errstr, sizeof errstr);
    if (!notifier) {
        log_error("notifier: %s", errstr);
        return 1;
    }
    status_config scfg = {
        .redis_host = cfg_str("PROMO_REDIS_HOST", "127.0.0.1"),
        .redis_port = (int)cfg_int("PROMO_REDIS_PORT", 6379),
        .mysql_host = cfg_str("PROMO_MYSQL_HOST", "127.0.0.1"),
        .mysql_port = (int)cfg_int("PROMO_MYSQL_PORT", 3306),
        .mysql_user = cfg_str("PROMO_MYSQL_USER", "promo"),
        .mysql_password = cfg_secret("PROMO_MYSQL_PASSWORD", "promo"),
        .mysql_db = cfg_str("PROMO_MYSQL_DB", "promo"),
        .ttl_s = (int)cfg_int("PROMO_STATUS_TTL_S", 86400),
        .notify = notifier,
    };
    if (status_init(&scfg, errstr, sizeof errstr)) {
        log_error("status: %s", errstr);
        notify_stop(notifier);
        return 1;
    }
    char docs_dir[4096];
    bool have_docs = docs_find_dir(docs_dir, sizeof docs_dir) == 0;
    if (!have_docs) log_warn("Swagger UI not found (make deps installs it); /api/docs shows the plain list");

    signals_on_stop(&stop_requested);

    int rc = 1;
    http_server *http = NULL;
    produce *producer = produce_new(bootstrap, (int)timeout_ms, errstr, sizeof errstr);
    if (!producer) {
        log_error("kafka producer: %s", errstr);
        goto out;
    }
    mg_init_library(0);
    http_config hcfg = {
        .listen = listen,
        .threads = (int)threads,
        .keep_alive_ms = (int)cfg_int("PROMO_HTTP_KEEPALIVE_MS", 5000),
        .api_keys = cfg_secret("PROMO_API_KEYS", "dev-admin-key:admin,dev-client-key:client"),
        .webhook_allow = cfg_str("PROMO_WEBHOOK_ALLOW", "127.0.0.1,localhost"),
        .access_log = cfg_int("PROMO_ACCESS_LOG", 0) == 1,
        .producer = producer,
        .notify = notifier,
        .docs_dir = have_docs ? docs_dir : NULL,
        /* High by default so benchmarks and stampede tests are not throttled;
         * set them to what one client may fairly take. */
        .rate_key_rps = (double)cfg_int("PROMO_RATE_KEY_RPS", 100000),
        .rate_key_burst = (double)cfg_int("PROMO_RATE_KEY_BURST", 100000),
        .rate_ip_rps = (double)cfg_int("PROMO_RATE_IP_RPS", 100000),
        .rate_ip_burst = (double)cfg_int("PROMO_RATE_IP_BURST", 100000),
    };
    http = http_start(&hcfg, errstr, sizeof errstr);
    if (!http) {
        log_error("http: %s", errstr);
        goto out;
    }
    log_info("listening on %s with %lld threads, kafka %s, redis %s:%d, mysql %s:%d/%s", listen, threads, bootstrap,
             scfg.redis_host, scfg.redis_port, scfg.mysql_host, scfg.mysql_port, scfg.mysql_db);

    while (!stop_requested) sleep_ms(100);
    log_info("stopping");
    rc = 0;
out:
    notify_close(notifier);
    /* A write waits for its ack at most the produce timeout, twice that
     * when it queued behind its partition's batch (produce.c). */
    http_drain(http, 2 * (int)timeout_ms + 2000);
    http_stop(http);
    if (producer) {
        produce_destroy(producer);
        mg_exit_library();
    }
    notify_stop(notifier);
    status_shutdown();
    if (rc == 0) log_info("stopped");
    return rc;
}
