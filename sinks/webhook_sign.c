/* webhook_sign.c — signatures, retry schedule, Retry-After and the callback
 * allow-list (webhook_sign.h).
 *
 * Pure functions: no I/O, no clock, no globals. The URL check is deliberately
 * narrower than what URLs allow, because a parser that is more lenient than
 * libcurl's lets "http://127.0.0.1@evil.com/" and its cousins through: any
 * authority this module would have to interpret (user information, percent
 * escapes, backslashes, zone ids) is refused instead of interpreted.
 */
#include "webhook_sign.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ---- base64 ------------------------------------------------------------- */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard alphabet, padding optional (secrets are often copied without it).
 * Returns the decoded length, or -1 on a bad character or overflow. */
static long b64_decode(const char *s, uint8_t *out, size_t out_size) {
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '=') len--;
    if (len % 4 == 1) return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= out_size) return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)n;
}

int webhook_sign_key(const char *secret, uint8_t *key, size_t key_size, size_t *key_len, char *errstr,
                     size_t errstr_size) {
    if (!secret || !*secret) {
        snprintf(errstr, errstr_size, "the webhook secret is empty");
        return -1;
    }
    if (strncmp(secret, "whsec_", 6) == 0) {
        long n = b64_decode(secret + 6, key, key_size);
        if (n <= 0) {
            snprintf(errstr, errstr_size, "a whsec_ secret must be followed by base64 of at most %zu bytes", key_size);
            return -1;
        }
        *key_len = (size_t)n;
        return 0;
    }
    size_t n = strlen(secret);
    if (n > key_size) {
        snprintf(errstr, errstr_size, "the webhook secret is longer than %zu bytes", key_size);
        return -1;
    }
    memcpy(key, secret, n);
    *key_len = n;
    return 0;
}

int webhook_sign(const uint8_t *key, size_t key_len, const char *id, int64_t timestamp_s, const char *body,
                 size_t body_len, char *out, size_t out_size) {
    if (out_size < WEBHOOK_SIGNATURE_MAX) return -1;
    char ts[24];
    int ts_len = snprintf(ts, sizeof ts, "%lld", (long long)timestamp_s);
    size_t id_len = strlen(id);
    size_t msg_len = id_len + 1 + (size_t)ts_len + 1 + body_len;
    uint8_t *msg = malloc(msg_len ? msg_len : 1);
    if (!msg) return -1;
    uint8_t *p = msg;
    memcpy(p, id, id_len);
    p += id_len;
    *p++ = '.';
    memcpy(p, ts, (size_t)ts_len);
    p += ts_len;
    *p++ = '.';
    if (body_len) memcpy(p, body, body_len);

    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    /* HMAC() accepts a NULL key only for an empty one; a one-byte dummy
     * pointer keeps an empty key (possible via "whsec_") well defined. */
    static const uint8_t empty_key[1];
    unsigned char *ok = HMAC(EVP_sha256(), key_len ? key : empty_key, (int)key_len, msg, msg_len, mac, &mac_len);
    free(msg);
    if (!ok || mac_len != 32) return -1;
    memcpy(out, "v1,", 3);
    /* 32 bytes encode to 44 characters plus the NUL EVP_EncodeBlock writes. */
    EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)mac_len);
    return 0;
}

/* ---- schedule ----------------------------------------------------------- */

int webhook_schedule_parse(const char *text, webhook_schedule *out, char *errstr, size_t errstr_size) {
    memset(out, 0, sizeof *out);
    if (!text) text = "";
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        const char *b = p, *e = p + len;
        while (b < e && isspace((unsigned char)*b)) b++;
        while (e > b && isspace((unsigned char)e[-1])) e--;
        if (b == e) {
            snprintf(errstr, errstr_size, "empty item in retry schedule \"%.100s\"", text);
            return -1;
        }
        if (out->n == WEBHOOK_SCHEDULE_MAX) {
            snprintf(errstr, errstr_size, "retry schedule has more than %d attempts", WEBHOOK_SCHEDULE_MAX);
            return -1;
        }
        const char *q = b;
        int64_t v = 0;
        while (q < e && *q >= '0' && *q <= '9') {
            if (v <= WEBHOOK_DELAY_MAX_MS) v = v * 10 + (*q - '0'); /* saturates: too long below */
            q++;
        }
        int item = (int)(e - b);
        if (q == b) {
            snprintf(errstr, errstr_size, "retry schedule item \"%.*s\" is not a number with a unit", item, b);
            return -1;
        }
        size_t unit_len = (size_t)(e - q);
        int64_t mult;
        if (unit_len == 0 && v == 0)
            mult = 0;
        else if (unit_len == 2 && strncmp(q, "ms", 2) == 0)
            mult = 1;
        else if (unit_len == 1 && *q == 's')
            mult = 1000;
        else if (unit_len == 1 && *q == 'm')
            mult = 60 * 1000;
        else if (unit_len == 1 && *q == 'h')
            mult = 3600 * 1000;
        else {
            snprintf(errstr, errstr_size, "retry schedule item \"%.*s\" needs a unit: ms, s, m or h", item, b);
            return -1;
        }
        if (v > WEBHOOK_DELAY_MAX_MS || v * mult > WEBHOOK_DELAY_MAX_MS) {
            snprintf(errstr, errstr_size, "retry schedule item \"%.*s\" is longer than 7 days", item, b);
            return -1;
        }
        out->delay_ms[out->n++] = v * mult;
        if (p[len] != ',') break;
        p += len + 1;
    }
    return 0;
}

int webhook_next_attempt(const webhook_schedule *s, int attempts_done, int64_t now_ms, int64_t retry_after_ms,
                         int64_t *next_ms) {
    if (attempts_done < 0) attempts_done = 0;
    if ((size_t)attempts_done >= s->n) return 1;
    int64_t delay = s->delay_ms[attempts_done];
    if (retry_after_ms > WEBHOOK_RETRY_AFTER_MAX_MS) retry_after_ms = WEBHOOK_RETRY_AFTER_MAX_MS;
    if (retry_after_ms > delay) delay = retry_after_ms;
    *next_ms = now_ms + delay;
    return 0;
}

/* ---- Retry-After -------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil), so no time zone or libc state is involved. */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int month_index(const char *s) {
    static const char *names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    for (int i = 0; i < 12; i++)
        if (strncmp(s, names[i], 3) == 0) return i + 1;
    return 0;
}

static bool digits(const char *s, int n) {
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return false;
    return true;
}

static int num(const char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

/* IMF-fixdate, the only form RFC 9110 lets senders use:
 * "Sun, 06 Nov 1994 08:49:37 GMT" (the weekday is not checked). */
static int imf_fixdate(const char *s, size_t len, int64_t *epoch_ms) {
    if (len != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s[19] != ':' ||
        s[22] != ':' || s[25] != ' ' || strncmp(s + 26, "GMT", 3) != 0)
        return -1;
    if (!digits(s + 5, 2) || !digits(s + 12, 4) || !digits(s + 17, 2) || !digits(s + 20, 2) || !digits(s + 23, 2))
        return -1;
    int day = num(s + 5, 2), mon = month_index(s + 8), year = num(s + 12, 4);
    int hh = num(s + 17, 2), mm = num(s + 20, 2), ss = num(s + 23, 2);
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mon == 0 || day < 1 || day > mdays[mon - 1] || hh > 23 || mm > 59 || ss > 60) return -1;
    int64_t secs = days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
    *epoch_ms = secs * 1000;
    return 0;
}

int webhook_retry_after_parse(const char *value, int64_t now_ms, int64_t *delay_ms) {
    if (!value) return -1;
    const char *b = value, *e = value + strlen(value);
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    if (b == e) return -1;
    if (digits(b, (int)(e - b))) {
        int64_t secs = 0;
        /* Anything beyond a year is as good as "too long": saturate. */
        for (const char *q = b; q < e && secs <= 366LL * 86400; q++) secs = secs * 10 + (*q - '0');
        *delay_ms = secs * 1000;
        return 0;
    }
    int64_t at;
    if (imf_fixdate(b, (size_t)(e - b), &at) != 0) return -1;
    *delay_ms = at > now_ms ? at - now_ms : 0;
    return 0;
}
