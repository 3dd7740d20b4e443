/* main.c — promo-processor: runs one domain's processor.
 *
 *   promo-processor --domain coupon|point|timesale
 *
 * The domain may also come from PROMO_DOMAIN. Several processes of one domain
 * share its partitions through the consumer group; SIGTERM or SIGINT makes a
 * process checkpoint and leave the group cleanly.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "runtime.h"
#include "util.h"

static volatile sig_atomic_t stop;

int main(int argc, char **argv) {
    const char *name = cfg_str("PROMO_DOMAIN", NULL);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--domain") == 0 && i + 1 < argc)
            name = argv[++i];
        else {
            fprintf(stderr, "usage: promo-processor --domain coupon|point|timesale\n");
            return 2;
        }
    }
    const domain_ops *ops = name ? domain_by_name(name) : NULL;
    if (!ops) {
        fprintf(stderr, "promo-processor: --domain must be coupon, point or timesale\n");
        return 2;
    }
    char prog[64];
    snprintf(prog, sizeof prog, "processor-%s", ops->name);
    log_init(prog);

    signals_on_stop(&stop);

    char errstr[512];
    runtime *rt = runtime_new(ops, errstr, sizeof errstr);
    if (!rt) {
        log_error("start failed: %s", errstr);
        return 1;
    }
    int rc = runtime_run(rt, &stop);
    runtime_destroy(rt);
    log_info("stopped");
    return rc == 0 ? 0 : 1;
}
