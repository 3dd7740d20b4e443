/* topics.h — the Kafka topics of the wire contract, named once. Each command
 * topic is keyed by its domain's entity key; results and dead letters keep
 * the key of the command they answer. Every program and tool spells a topic
 * through these names.
 */
#ifndef PROMO_TOPICS_H
#define PROMO_TOPICS_H

#include "cmd.h"

#define TOPIC_COUPON_CMD "promo.coupon.cmd"
#define TOPIC_POINT_CMD "promo.point.cmd"
#define TOPIC_TIMESALE_CMD "promo.timesale.cmd"
#define TOPIC_RESULTS "promo.results"
#define TOPIC_DLQ "promo.dlq"

/* The command topic of domain d; NULL for a value that names no domain. */
static inline const char *topic_cmd(promo_domain d) {
    switch (d) {
    case DOMAIN_COUPON: return TOPIC_COUPON_CMD;
    case DOMAIN_POINT: return TOPIC_POINT_CMD;
    case DOMAIN_TIMESALE: return TOPIC_TIMESALE_CMD;
    }
    return NULL;
}

#endif
