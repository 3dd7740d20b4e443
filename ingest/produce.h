/* produce.h — the one Kafka producer of ingest, and waiting for acks.
 *
 * A write is answered 202 only once Kafka has the command (acks=all), so a
 * CivetWeb worker calls produce_send() and blocks until the delivery report
 * of its own message. One producer serves every worker: a gate per partition
 * lets one batch of theirs be in flight there at a time and sends what
 * queued behind it as the next batch (see produce.c), and one dedicated
 * thread calls rd_kafka_poll() to run the delivery callbacks, which wake the
 * waiting worker through that worker's own latch (latch.h) — there is no
 * lock shared by all requests.
 */
#ifndef PROMO_INGEST_PRODUCE_H
#define PROMO_INGEST_PRODUCE_H

#include <stddef.h>

#include "cmd.h"
#include "latch.h"

typedef struct produce produce;

/* Starts the producer and its poll thread. timeout_ms bounds how long a
 * message may wait for its ack (message.timeout.ms). Returns NULL with errstr
 * filled. Caller frees with produce_destroy(). */
produce *produce_new(const char *bootstrap, int timeout_ms, char *errstr, size_t errstr_size);

/* Flushes what is queued (up to the message timeout), stops the poll thread
 * and frees the producer. Call after every worker has returned. */
void produce_destroy(produce *p);

/* Sends value under key to the command topic of domain d and waits for its
 * delivery report. Runs on a CivetWeb worker thread; key is copied, value is
 * not and must stay valid until this returns. With also, the report counts
 * also down and the wait lasts until also reaches zero, so a caller waiting
 * for other things too (initialised with one count for this send plus theirs)
 * sleeps once; NULL waits for the report alone. Returns 0 once acknowledged,
 * or -1 with errstr filled (queue full, broker down past the timeout, fatal
 * producer error): the command may or may not have been written, and the
 * client must retry with the same request id. */
int produce_send(produce *p, promo_domain d, const char *key, const void *value, size_t value_len, latch *also,
                 char *errstr, size_t errstr_size);

/* Asks the cluster for metadata within timeout_ms. Returns 0 when the
 * brokers answer and the producer has no fatal error, else -1 with errstr. */
int produce_ready(produce *p, int timeout_ms, char *errstr, size_t errstr_size);

/* The topic commands of domain d go to (topics.h). */
const char *produce_topic(promo_domain d);

#endif
