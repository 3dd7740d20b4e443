/* result_json.h — a Result as the JSON body clients read.
 *
 * The MySQL sink stores this text in requests.result and SETs it in Redis
 * under promo:req:<request_id>; ingest returns it unchanged from
 * GET /v1/requests/{id}. So this module alone decides the shape of a request's
 * status: {"request_id", "status", "reason", "domain", "command_type",
 * "entity_key", "submitted_at", "processed_at", "result": {...}}, where result
 * holds only the outcome fields the Result carries (policy, sale and ledger
 * included when present) and nested records spell absent optionals as null.
 *
 * Before its result exists, a request's status is the PENDING document
 * (result_json_pending), which ingest writes; the sink's first final status
 * replaces it and nothing replaces that (first final wins: the sink's status
 * script recognises PENDING by RESULT_JSON_PENDING_MARK).
 */
#ifndef PROMO_RESULT_JSON_H
#define PROMO_RESULT_JSON_H

#include <jansson.h>
#include <stdbool.h>

#include "cmd.h"

/* What marks a PENDING status document, and only that: result_json_pending()
 * writes it exactly so (compact), and no final status has a PENDING status.
 * The MySQL sink's Lua status script searches for it too (sinks/mysql_main.c). */
#define RESULT_JSON_PENDING_MARK "\"status\":\"PENDING\""

/* Builds the status body of res. Strings that are not valid UTF-8 have their
 * bad bytes replaced by U+FFFD, so any result yields valid JSON. Returns NULL
 * only on out of memory. Caller owns the reference (json_decref()). */
json_t *result_json(const promo_result *res);

/* The same body dumped compactly, keys in a fixed order, so equal results give
 * byte-identical text. Returns NULL on out of memory. Caller frees with free(). */
char *result_json_dump(const promo_result *res);

/* The PENDING status document of cmd, whose entity key is key: the keys of
 * a final status, with "status":"PENDING", null reason and processed_at, and
 * an empty result. Every string in it is an id, a fixed name or a number, so
 * nothing needs escaping. Writes into out; returns 0, or -1 when out_size is
 * too small. */
int result_json_pending(const promo_cmd *cmd, const char *key, char *out, size_t out_size);

/* Whether json is a PENDING status document (see RESULT_JSON_PENDING_MARK). */
bool result_json_is_pending(const char *json);

/* Copies the first n bytes of s (stopping at a NUL) into out as valid UTF-8,
 * each bad byte replaced by U+FFFD; out must hold 3 * n + 1 bytes. Returns
 * the length written (out is NUL-terminated). The MySQL sink uses it so its
 * text columns hold the same text as the JSON. */
size_t result_json_utf8_repair(const char *s, size_t n, char *out);

#endif
