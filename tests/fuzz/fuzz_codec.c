/* fuzz_codec.c — libFuzzer target for the Avro codec's decoders (codec.h).
 *
 * Every Kafka message a processor or sink reads passes codec_decode_cmd or
 * codec_decode_result first, and anyone with access to the topics can
 * produce, so the decoders must turn any bytes into either an error code or a
 * value that is safe to use. The whole input is one framed message, decoded
 * as a command with no expected schema, with each command schema id, and as
 * a Result. The checks: no crash, leak or out-of-bounds access (ASan, UBSan,
 * LeakSanitizer); errors are one of the codec_err codes with a message;
 * expecting a schema id accepts exactly what "any id" accepts under that id;
 * a decoded value has NUL-terminated strings, encodes again, and decodes from
 * that encoding to the very same struct (so nothing is lost or invented);
 * and cmd_validate() and the fingerprint run on every decoded command.
 *
 * Seeds are encoded commands and results of every type (tests/fuzz/corpus/codec).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static codec *fuzz_codec;

static void fuzz_fail(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_codec: %s: %s\n", what, detail);
    abort();
}

static void fuzz_check_rc(int rc, const char *errstr) {
    if (rc == CODEC_OK) return;
    if (rc < CODEC_ERR_INTERNAL || rc > CODEC_ERR_FRAMING) fuzz_fail("unknown error code", errstr);
    if (rc == CODEC_ERR_INTERNAL) fuzz_fail("internal error on a decode", errstr);
    if (!errstr[0]) fuzz_fail("error without a message", codec_err_code(rc));
}

static void fuzz_check_strings(const char *s, size_t size, const char *name) {
    if (!memchr(s, '\0', size)) fuzz_fail("string not NUL-terminated", name);
}

static void fuzz_round_trip_cmd(const promo_cmd *cmd) {
    static promo_cmd back;
    codec_buf buf = {0};
    char errstr[256] = "";
    char field[80], why[240], key[PROMO_ID_MAX + 1];

    fuzz_check_strings(cmd->request_id, sizeof cmd->request_id, "request_id");
    fuzz_check_strings(cmd->callback_url, sizeof cmd->callback_url, "callback_url");
    fuzz_check_strings(cmd->client_id, sizeof cmd->client_id, "client_id");
    if ((unsigned)cmd->type >= CMD__COUNT) fuzz_fail("command type out of range", "");
    (void)cmd_validate(cmd, field, sizeof field, why, sizeof why);
    (void)cmd_entity_key(cmd, key, sizeof key);
    (void)cmd_fingerprint(cmd);
    (void)cmd_type_name(cmd->type);

    int rc = codec_encode_cmd(fuzz_codec, cmd, &buf, errstr, sizeof errstr);
    if (rc != CODEC_OK) fuzz_fail("decoded command does not encode", errstr);
    rc = codec_decode_cmd(fuzz_codec, buf.data, buf.len, 0, &back, errstr, sizeof errstr);
    if (rc != CODEC_OK) fuzz_fail("re-encoded command does not decode", errstr);
    if (memcmp(cmd, &back, sizeof back) != 0) fuzz_fail("command changed across encode/decode", cmd->request_id);
    free(buf.data);
}

static void fuzz_round_trip_result(const promo_result *res) {
    static promo_result back;
    codec_buf buf = {0};
    char errstr[256] = "";

    fuzz_check_strings(res->request_id, sizeof res->request_id, "request_id");
    fuzz_check_strings(res->reason, sizeof res->reason, "reason");
    fuzz_check_strings(res->coupon_id, sizeof res->coupon_id, "coupon_id");
    fuzz_check_strings(res->callback_url, sizeof res->callback_url, "callback_url");
    if (res->n_ledger < 0 || res->n_ledger > PROMO_LEDGER_MAX) fuzz_fail("ledger count out of range", "");
    (void)cmd_type_name(res->command_type);
    (void)promo_domain_name(res->domain);
    for (int i = 0; i < res->n_ledger; i++) (void)ledger_kind_name(res->ledger[i].kind);

    int rc = codec_encode_result(fuzz_codec, res, &buf, errstr, sizeof errstr);
    if (rc != CODEC_OK) fuzz_fail("decoded result does not encode", errstr);
    rc = codec_decode_result(fuzz_codec, buf.data, buf.len, &back, errstr, sizeof errstr);
    if (rc != CODEC_OK) fuzz_fail("re-encoded result does not decode", errstr);
    if (memcmp(res, &back, sizeof back) != 0) fuzz_fail("result changed across encode/decode", res->request_id);
    free(buf.data);
}

/* Avro-C's generic values keep pointers at unaligned offsets inside their
 * records, which LeakSanitizer does not scan by default: without this, the
 * codec's reused values look leaked while the codec still owns them. */
const char *__lsan_default_options(void);
const char *__lsan_default_options(void) {
    return "use_unaligned=1";
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char errstr[256];
    fuzz_codec = codec_new(errstr, sizeof errstr);
    if (!fuzz_codec) fuzz_fail("codec_new", errstr);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static promo_cmd cmd;
    static promo_result res;
    char errstr[256];

    /* The exact-size copy lets ASan catch a read one past the message even
     * when libFuzzer's own buffer would be larger. */
    uint8_t *msg = malloc(size ? size : 1);
    if (!msg) abort();
    if (size) memcpy(msg, data, size);

    errstr[0] = '\0';
    int any = codec_decode_cmd(fuzz_codec, msg, size, 0, &cmd, errstr, sizeof errstr);
    fuzz_check_rc(any, errstr);
    if (any == CODEC_OK) fuzz_round_trip_cmd(&cmd);

    for (int id = SCHEMA_ID_COUPON_CMD; id <= SCHEMA_ID_TIMESALE_CMD; id++) {
        errstr[0] = '\0';
        int rc = codec_decode_cmd(fuzz_codec, msg, size, id, &cmd, errstr, sizeof errstr);
        fuzz_check_rc(rc, errstr);
        int framed_id =
            size >= 5 ? (int)((uint32_t)msg[1] << 24 | (uint32_t)msg[2] << 16 | (uint32_t)msg[3] << 8 | msg[4]) : -1;
        /* Expecting the message's own id changes nothing; expecting another
         * id refuses what "any" would accept. */
        if (framed_id == id && (rc == CODEC_OK) != (any == CODEC_OK)) fuzz_fail("expected id disagrees with any", "");
        if (framed_id != id && rc == CODEC_OK) fuzz_fail("accepted a message of another schema id", "");
        if (rc == CODEC_OK) fuzz_round_trip_cmd(&cmd);
    }

    errstr[0] = '\0';
    int rc = codec_decode_result(fuzz_codec, msg, size, &res, errstr, sizeof errstr);
    fuzz_check_rc(rc, errstr);
    if (rc == CODEC_OK) fuzz_round_trip_result(&res);

    free(msg);
    return 0;
}
