/* submit.c — `promoctl submit [--follow] <domain> <json>`: produces one
 * command (acks=all) and prints its request id.
 *
 * The command goes through ingest's own parser and validator (common/parse.c),
 * so the CLI accepts exactly what HTTP accepts: the JSON is the HTTP body plus
 * "type" (the Avro record name, e.g. "IssueCoupon") and the path ids as
 * fields ("policy_id", "coupon_id", "user_id", "sale_id", "order_id"), and
 * may carry "request_id" and "client_id". It is keyed and partitioned as
 * ingest would (the fleet's producer rules, ctl.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cmd.h"
#include "codec.h"
#include "ctl.h"
#include "parse.h"
#include "topics.h"
#include "util.h"

/* The JSON fields that HTTP carries in the path, per command type. */
static const char *const path_ids[CMD__COUNT][2] = {
    [CMD_ISSUE_COUPON] = {"policy_id", NULL},
    [CMD_REDEEM_COUPON] = {"coupon_id", NULL},
    [CMD_CANCEL_REDEMPTION] = {"coupon_id", NULL},
    [CMD_EARN_POINTS] = {"user_id", NULL},
    [CMD_USE_POINTS] = {"user_id", NULL},
    [CMD_CANCEL_POINT_USE] = {"user_id", NULL},
    [CMD_PLACE_ORDER] = {"sale_id", NULL},
    [CMD_CANCEL_ORDER] = {"sale_id", "order_id"},
    [CMD_PAUSE_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_RESUME_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_CLOSE_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_UPDATE_COUPON_POLICY] = {"policy_id", NULL},
    [CMD_PAUSE_TIME_SALE] = {"sale_id", NULL},
    [CMD_RESUME_TIME_SALE] = {"sale_id", NULL},
    [CMD_CLOSE_TIME_SALE] = {"sale_id", NULL},
    [CMD_UPDATE_TIME_SALE] = {"sale_id", NULL},
    [CMD_HOLD_ORDER] = {"sale_id", NULL},
    [CMD_CONFIRM_ORDER] = {"sale_id", "order_id"},
    [CMD_EARN_PENDING_POINTS] = {"user_id", NULL},
    [CMD_ADJUST_POINTS] = {"user_id", NULL},
};

/* Takes a string field out of obj into out. Returns 0 (absent leaves out
 * as it is), or -1 with errstr filled. */
static int take_string(json_t *obj, const char *name, char *out, size_t out_size, char *errstr, size_t errstr_size) {
    json_t *v = json_object_get(obj, name);
    if (!v) return 0;
    if (!json_is_string(v) || json_string_length(v) >= out_size) {
        snprintf(errstr, errstr_size, "%s must be a string of at most %zu bytes", name, out_size - 1);
        return -1;
    }
    snprintf(out, out_size, "%s", json_string_value(v));
    json_object_del(obj, name);
    return 0;
}

/* Builds and validates a command from the CLI's JSON. Returns 0, or -1 with
 * errstr filled. */
static int submit_build(const char *text, promo_cmd *cmd, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *obj = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj || !json_is_object(obj)) {
        snprintf(errstr, errstr_size, "the command must be a JSON object%s%s", obj ? "" : ": ", obj ? "" : jerr.text);
        json_decref(obj);
        return -1;
    }
    int rc = -1;
    char type[48] = "", request_id[PROMO_ID_MAX + 1] = "", client_id[PROMO_ID_MAX + 1] = "";
    char *body = NULL;
    if (take_string(obj, "type", type, sizeof type, errstr, errstr_size) ||
        take_string(obj, "request_id", request_id, sizeof request_id, errstr, errstr_size) ||
        take_string(obj, "client_id", client_id, sizeof client_id, errstr, errstr_size))
        goto out;
    int t = cmd_type_from_name(type);
    if (t < 0) {
        snprintf(errstr, errstr_size, "\"type\" must be a command record name such as \"IssueCoupon\"");
        goto out;
    }
    parse_route route = {.id = ROUTE_NONE};
    /* A HoldOrder goes by the orders route (with hold_ms), an
     * EarnPendingPoints by the earn route (with available_at); the commands
     * only processors produce (ExpireHold, ReleasePoints) have no route. */
    cmd_type by = t == CMD_HOLD_ORDER ? CMD_PLACE_ORDER : t == CMD_EARN_PENDING_POINTS ? CMD_EARN_POINTS : (cmd_type)t;
    for (int r = 0; r < ROUTE__COUNT; r++)
        if (parse_route_is_write((parse_route_id)r) && parse_route_cmd((parse_route_id)r) == by)
            route.id = (parse_route_id)r;
    char *ids[2] = {route.id1, route.id2};
    size_t sizes[2] = {sizeof route.id1, sizeof route.id2};
    for (int i = 0; i < 2; i++) {
        const char *name = path_ids[t][i];
        if (!name) continue;
        if (take_string(obj, name, ids[i], sizes[i], errstr, errstr_size)) goto out;
        if (!ids[i][0]) {
            snprintf(errstr, errstr_size, "%s is required", name);
            goto out;
        }
    }
    if (!request_id[0]) {
        uint8_t rnd[8];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
            snprintf(errstr, errstr_size, "getrandom: %s", strerror(errno));
            goto out;
        }
        snprintf(request_id, sizeof request_id, "ctl-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
                 rnd[4], rnd[5], rnd[6], rnd[7]);
    }
    body = json_dumps(obj, JSON_COMPACT);
    if (!body) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    parse_input in = {
        .route = &route,
        .content_type = "application/json",
        .body = body,
        .body_len = strlen(body),
        .idempotency_key = request_id,
        .client_id = client_id[0] ? client_id : NULL,
        .now_ms = now_ms(),
        .webhook_allow = cfg_str("PROMO_WEBHOOK_ALLOW", "127.0.0.1,localhost"),
    };
    parse_error perr;
    if (parse_cmd(&in, cmd, &perr) != 0) {
        snprintf(errstr, errstr_size, "%s%s%s: %s", perr.code, perr.field[0] ? " " : "", perr.field, perr.message);
        goto out;
    }
    rc = 0;
out:
    free(body);
    json_decref(obj);
    return rc;
}

int submit_main(int argc, char **argv) {
    int follow = 0, i = 0;
    if (i < argc && strcmp(argv[i], "--follow") == 0) follow = 1, i++;
    if (argc - i != 2) return ctl_usage();
    int d = ctl_domain_index(argv[i]);
    if (d < 0) return ctl_usage();
    char errstr[512];
    promo_cmd cmd;
    if (submit_build(argv[i + 1], &cmd, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "promoctl: %s\n", errstr);
        return 1;
    }
    if ((int)cmd_domain(cmd.type) != d) {
        fprintf(stderr, "promoctl: %s belongs to the %s domain, not %s\n", cmd_type_name(cmd.type),
                promo_domain_name(cmd_domain(cmd.type)), ctl_domains[d]);
        return 1;
    }
    char key[PROMO_ID_MAX + 1];
    if (cmd_entity_key(&cmd, key, sizeof key) != 0) {
        fprintf(stderr, "promoctl: no entity key in the command\n");
        return 1;
    }
    const char *topic = topic_cmd((promo_domain)d);
    int rc = 1;
    codec_buf buf = {0};
    rd_kafka_t *rk = NULL;
    codec *c = codec_new(errstr, sizeof errstr);
    if (!c || codec_encode_cmd(c, &cmd, &buf, errstr, sizeof errstr) != CODEC_OK) goto fail;
    if (!(rk = ctl_producer_new(errstr, sizeof errstr))) goto fail;
    ctl_delivery dv;
    if (ctl_produce_sync(rk, topic, RD_KAFKA_PARTITION_UA, key, strlen(key), buf.data, buf.len, &dv, errstr,
                         sizeof errstr) != 0)
        goto fail;
    fprintf(stderr, "promoctl: %s %s acknowledged at %s[%d]@%" PRId64 "\n", cmd_type_name(cmd.type), cmd.request_id,
            topic, (int)dv.partition, dv.offset);
    printf("%s\n", cmd.request_id);
    fflush(stdout);
    rc = follow ? follow_request(cmd.request_id, 30000) : 0;
    goto out;
fail:
    fprintf(stderr, "promoctl: %s\n", errstr);
out:
    if (rk) rd_kafka_destroy(rk);
    free(buf.data);
    codec_destroy(c);
    return rc;
}
