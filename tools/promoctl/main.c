/* main.c — promoctl, the operator's command line for a running fleet.
 *
 *   promoctl submit [--follow] <domain> <json>    produce one command (acks=all), print its request id
 *   promoctl follow [--timeout-ms N] <request_id> wait for a request's outcome, print its status JSON
 *   promoctl checkpoint [--json] <domain> [partition]
 *                                                 a partition's checkpoint: offset, epoch, entries, age
 *   promoctl dlq list [--from-beginning] [--limit N] [--json]
 *                                                 decode and show dead letters from promo.dlq
 *   promoctl dlq replay [--dry-run] <selector...|--all>
 *                                                 republish dead letters' original bytes and key
 *   promoctl lag [--json] [domain]                consumer groups' committed offsets vs high watermarks
 *   promoctl topics [--partitions N] [--replication R] [--min-isr M] [--timeout-ms T]
 *                                                 create the promo topics that are missing
 *   promoctl reconcile [--repair]                 MySQL against the results log; --repair writes what
 *                                                 differs again through the sink's writer
 *
 * One file per subcommand group (submit.c, follow.c, checkpoints.c, dlq.c,
 * lag.c, topics_admin.c, reconcile.c) over the helpers they share (ctl.c); this file only
 * dispatches. It talks to the same servers as the fleet, configured by the
 * same PROMO_* variables (PROMO_KAFKA_BOOTSTRAP[_FILE], PROMO_REDIS_*,
 * PROMO_MYSQL_*, PROMO_WEBHOOK_ALLOW), so the same binary works next to the
 * local fleet and inside a container of the production compose file; and it
 * speaks the fleet's contract through common/: the request parser, the codec,
 * the checkpoint module, the topic and key names.
 *
 * Exit status: 0 done, 1 failure, 2 usage, 3 `follow` saw no final status in
 * time (and `reconcile`: 1 differences left, 3 could not tell). Reads stdin never; writes results to stdout, progress
 * to stderr.
 */
#include <string.h>

#include "ctl.h"
#include "util.h"

int main(int argc, char **argv) {
    log_init("promoctl");
    if (argc < 2) return ctl_usage();
    const char *sub = argv[1];
    if (strcmp(sub, "submit") == 0) return submit_main(argc - 2, argv + 2);
    if (strcmp(sub, "follow") == 0) return follow_main(argc - 2, argv + 2);
    if (strcmp(sub, "checkpoint") == 0) return checkpoints_main(argc - 2, argv + 2);
    if (strcmp(sub, "dlq") == 0) return dlq_main(argc - 2, argv + 2);
    if (strcmp(sub, "lag") == 0) return lag_main(argc - 2, argv + 2);
    if (strcmp(sub, "topics") == 0) return topics_main(argc - 2, argv + 2);
    if (strcmp(sub, "reconcile") == 0) return reconcile_main(argc - 2, argv + 2);
    return ctl_usage();
}
