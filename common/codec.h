/* codec.h — the Confluent wire format over Avro-C, for commands, results and
 * dead letters.
 *
 * A value on the wire is byte 0x00, the schema id as a 4-byte big-endian
 * integer, then the Avro binary encoding (DESIGN.md §3). The schemas are read
 * from schemas/ at build time (embedded as strings), so no registry is needed.
 * A codec holds Avro-C schema, class and value objects that are reused across
 * calls: one codec per thread, never shared.
 *
 * Decoding never trusts its input: a wrong magic byte, an unknown schema id,
 * truncated or garbage Avro, or a string longer than its field's limit is an
 * error with a code and a message, never a crash.
 */
#ifndef PROMO_CODEC_H
#define PROMO_CODEC_H

#include "cmd.h"

#define SCHEMA_ID_COUPON_CMD 1
#define SCHEMA_ID_POINT_CMD 2
#define SCHEMA_ID_TIMESALE_CMD 3
#define SCHEMA_ID_RESULT 4
#define SCHEMA_ID_DEAD_LETTER 5

/* Decode error codes, also the DeadLetter error_code strings. */
typedef enum {
    CODEC_OK = 0,
    CODEC_ERR_FRAMING = -1,  /* BAD_FRAMING: too short or magic byte not 0 */
    CODEC_ERR_SCHEMA = -2,   /* UNKNOWN_SCHEMA: id not one of ours, or not expected here */
    CODEC_ERR_AVRO = -3,     /* BAD_AVRO: truncated, garbage, trailing bytes */
    CODEC_ERR_FIELD = -4,    /* INVALID_FIELD: a string too long, an id out of range */
    CODEC_ERR_INTERNAL = -5, /* out of memory, encoder failure */
} codec_err;

const char *codec_err_code(codec_err e); /* "BAD_AVRO"... static string */

typedef struct codec codec;

/* Builds the schemas and reusable values. Returns NULL with a message in
 * errstr on failure. Caller frees with codec_destroy(). */
codec *codec_new(char *errstr, size_t errstr_size);
void codec_destroy(codec *c);

/* A growable byte buffer. Owned by the caller; free data with free(). */
typedef struct codec_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} codec_buf;

/* Encodes cmd with the schema of its domain (ids 1..3) into out (replacing its
 * contents). Returns CODEC_OK or an error with errstr filled. */
int codec_encode_cmd(codec *c, const promo_cmd *cmd, codec_buf *out, char *errstr, size_t errstr_size);
/* Decodes a framed command of any of the three command schemas. When
 * expect_schema_id is nonzero, any other id is CODEC_ERR_SCHEMA. */
int codec_decode_cmd(codec *c, const uint8_t *data, size_t len, int expect_schema_id, promo_cmd *cmd, char *errstr,
                     size_t errstr_size);

int codec_encode_result(codec *c, const promo_result *res, codec_buf *out, char *errstr, size_t errstr_size);
int codec_decode_result(codec *c, const uint8_t *data, size_t len, promo_result *res, char *errstr, size_t errstr_size);

typedef struct dead_letter {
    const char *source_topic;
    int32_t source_partition;
    int64_t source_offset;
    const uint8_t *key; /* NULL = null */
    size_t key_len;
    const uint8_t *value; /* NULL = null */
    size_t value_len;
    const char *error_code;
    const char *reason;
    int64_t failed_at;
    const char *consumer;
} dead_letter;

/* Pointers in dl are borrowed. */
int codec_encode_dead_letter(codec *c, const dead_letter *dl, codec_buf *out, char *errstr, size_t errstr_size);
/* Decodes a framed DeadLetter (operators' tools read promo.dlq). The strings
 * and bytes dl points to belong to c: valid until c decodes the next dead
 * letter or is destroyed. */
int codec_decode_dead_letter(codec *c, const uint8_t *data, size_t len, dead_letter *dl, char *errstr,
                             size_t errstr_size);

#endif
