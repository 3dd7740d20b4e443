/* topics.h — the Kafka topics of the wire contract (DESIGN.md §3), named
 * once. Each command topic is keyed by its domain's entity key; results and
 * dead letters keep the key of the command they answer. */
#ifndef PROMO_TOPICS_H
#define PROMO_TOPICS_H

#define TOPIC_COUPON_CMD "promo.coupon.cmd"
#define TOPIC_POINT_CMD "promo.point.cmd"
#define TOPIC_TIMESALE_CMD "promo.timesale.cmd"
#define TOPIC_RESULTS "promo.results"
#define TOPIC_DLQ "promo.dlq"

#endif
