/* keys.h — the Redis keys and channel that programs share, named once.
 *
 *   promo:req:<request_id>    a request's status document (result_json.h):
 *                             PENDING, SET NX by ingest before its 202; the
 *                             first final result, set by the MySQL sink's
 *                             first-final-wins script. TTL PROMO_STATUS_TTL_S.
 *   promo:idem:<request_id>   the fingerprint of the HTTP request that claimed
 *                             an Idempotency-Key (ingest/status.c).
 *   promo:done                the channel on which the sink PUBLISHes a
 *                             request id once its final status is in place;
 *                             ingest's long-polls wait on it (ingest/notify.c).
 *   promo:{<domain>:<partition>}:meta and :state
 *                             a partition's checkpoint (checkpoint.h). The
 *                             hash tag keeps both in one Redis Cluster slot,
 *                             so one script can write them atomically.
 *
 * Readers of these keys outside the fleet (operators, promoctl) rely on the
 * same names; changing one is a change of the contract.
 */
#ifndef PROMO_KEYS_H
#define PROMO_KEYS_H

#define KEY_REQ_PREFIX "promo:req:"
#define KEY_IDEM_PREFIX "promo:idem:"
#define KEY_DONE_CHANNEL "promo:done"

/* printf formats of a checkpoint's keys: domain name, partition (int). */
#define KEY_CKPT_META "promo:{%s:%d}:meta"
#define KEY_CKPT_STATE "promo:{%s:%d}:state"
/* A SCAN pattern for every checkpoint meta of a domain: domain name. */
#define KEY_CKPT_META_MATCH "promo:{%s:*}:meta"

#endif
