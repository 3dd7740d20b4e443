/* test_webhook.c — the webhook dispatcher's pure rules (webhook_sign.h):
 * signatures against vectors computed elsewhere, the retry schedule and
 * Retry-After parsers, the next-attempt computation, and the callback
 * allow-list against the URL tricks used to smuggle another host past a
 * check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h> /* after the headers it relies on */

#include "url.h"
#include "webhook_sign.h"

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

/* ---- signatures --------------------------------------------------------- */

static void sign_with(const char *secret, const char *id, int64_t ts, const char *body, char *out) {
    uint8_t key[WEBHOOK_KEY_MAX];
    size_t key_len = 0;
    char err[128];
    assert_int_equal(webhook_sign_key(secret, key, sizeof key, &key_len, err, sizeof err), 0);
    assert_int_equal(webhook_sign(key, key_len, id, ts, body, strlen(body), out, WEBHOOK_SIGNATURE_MAX), 0);
}

/* The expected values were computed once with Python's standard library, an
 * implementation independent of this one:
 *   base64.b64encode(hmac.new(key, b"<id>.<ts>.<body>", hashlib.sha256).digest())
 * The second vector is the example of the Standard Webhooks specification
 * (secret "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), so "whsec_" decoding is
 * checked against the convention itself. */
static void test_sign_known_vectors(void **state) {
    (void)state;
    char sig[WEBHOOK_SIGNATURE_MAX];
    sign_with("dev-webhook-secret", "msg_r1", 1700000000, "{\"request_id\":\"r1\"}", sig);
    assert_string_equal(sig, "v1,+c9MkjoJYYHWYLD8z75SnL0tP/nMy8MtAPyrMFoRFUU=");
    sign_with("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
              "{\"test\": 2432232314}", sig);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

static void test_sign_changes_with_every_part(void **state) {
    (void)state;
    char base[WEBHOOK_SIGNATURE_MAX], other[WEBHOOK_SIGNATURE_MAX];
    sign_with("k", "msg_a", 100, "{}", base);
    sign_with("k", "msg_b", 100, "{}", other);
    assert_string_not_equal(base, other);
    sign_with("k", "msg_a", 101, "{}", other);
    assert_string_not_equal(base, other);
    sign_with("k", "msg_a", 100, "{ }", other);
    assert_string_not_equal(base, other);
    sign_with("K", "msg_a", 100, "{}", other);
    assert_string_not_equal(base, other);
    sign_with("k", "msg_a", 100, "{}", other);
    assert_string_equal(base, other);
    /* An empty body is still signed ("<id>.<ts>."). */
    sign_with("k", "msg_a", 100, "", other);
    assert_int_equal(strlen(other), 3 + 44);
}

static void test_sign_key(void **state) {
    (void)state;
    uint8_t key[WEBHOOK_KEY_MAX];
    size_t n = 0;
    char err[128];
    assert_int_equal(webhook_sign_key("plain", key, sizeof key, &n, err, sizeof err), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(key, "plain", 5);
    /* base64 "aGVsbG8=" is "hello"; padding is optional. */
    assert_int_equal(webhook_sign_key("whsec_aGVsbG8=", key, sizeof key, &n, err, sizeof err), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(key, "hello", 5);
    assert_int_equal(webhook_sign_key("whsec_aGVsbG8", key, sizeof key, &n, err, sizeof err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(webhook_sign_key("whsec_", key, sizeof key, &n, err, sizeof err), -1);
    assert_int_equal(webhook_sign_key("whsec_a!b=", key, sizeof key, &n, err, sizeof err), -1);
    assert_int_equal(webhook_sign_key("whsec_a", key, sizeof key, &n, err, sizeof err), -1);
    assert_int_equal(webhook_sign_key("", key, sizeof key, &n, err, sizeof err), -1);
    assert_int_equal(webhook_sign_key(NULL, key, sizeof key, &n, err, sizeof err), -1);
    assert_int_equal(webhook_sign_key("0123456789", key, 4, &n, err, sizeof err), -1);
    assert_int_equal(webhook_sign_key("whsec_aGVsbG8=", key, 4, &n, err, sizeof err), -1);
}

/* ---- schedule ----------------------------------------------------------- */

static void test_schedule_default(void **state) {
    (void)state;
    webhook_schedule s;
    char err[128];
    assert_int_equal(webhook_schedule_parse("0,5s,5m,30m,2h,5h,10h,10h", &s, err, sizeof err), 0);
    int64_t want[] = {0, 5 * SEC, 5 * MIN, 30 * MIN, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR};
    assert_int_equal(s.n, 8);
    for (size_t i = 0; i < 8; i++) assert_int_equal(s.delay_ms[i], want[i]);
}

static void test_schedule_good(void **state) {
    (void)state;
    webhook_schedule s;
    char err[128];
    assert_int_equal(webhook_schedule_parse("0,300ms,300ms,300ms,300ms", &s, err, sizeof err), 0);
    assert_int_equal(s.n, 5);
    assert_int_equal(s.delay_ms[4], 300);
    assert_int_equal(webhook_schedule_parse(" 1s , 2m,0ms ", &s, err, sizeof err), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.delay_ms[0], SEC);
    assert_int_equal(s.delay_ms[1], 2 * MIN);
    assert_int_equal(s.delay_ms[2], 0);
    assert_int_equal(webhook_schedule_parse("0", &s, err, sizeof err), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(webhook_schedule_parse("168h", &s, err, sizeof err), 0);
    assert_int_equal(s.delay_ms[0], WEBHOOK_DELAY_MAX_MS);
    char many[4 * WEBHOOK_SCHEDULE_MAX];
    size_t len = 0;
    for (int i = 0; i < WEBHOOK_SCHEDULE_MAX; i++)
        len += (size_t)snprintf(many + len, sizeof many - len, "%s1s", i ? "," : "");
    assert_int_equal(webhook_schedule_parse(many, &s, err, sizeof err), 0);
    assert_int_equal(s.n, WEBHOOK_SCHEDULE_MAX);
}

static void test_schedule_bad(void **state) {
    (void)state;
    const char *bad[] = {"",     " ",      ",", "5",   "5x", "1s,,2s", "1s,",   ",1s",  "-1s",
                         "1.5s", "1d",     "s", "1 s", "1S", "1Ms",    "0x10s", "169h", "99999999999999999999999h",
                         "1sm",  "10080m1"};
    webhook_schedule s;
    char err[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (webhook_schedule_parse(bad[i], &s, err, sizeof err) != -1) fail_msg("accepted \"%s\"", bad[i]);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(webhook_schedule_parse(NULL, &s, err, sizeof err), -1);
    char many[4 * (WEBHOOK_SCHEDULE_MAX + 1)];
    size_t len = 0;
    for (int i = 0; i <= WEBHOOK_SCHEDULE_MAX; i++)
        len += (size_t)snprintf(many + len, sizeof many - len, "%s1s", i ? "," : "");
    assert_int_equal(webhook_schedule_parse(many, &s, err, sizeof err), -1);
}

/* ---- Retry-After -------------------------------------------------------- */

static void test_retry_after(void **state) {
    (void)state;
    /* Wed, 21 Oct 2015 07:28:00 GMT is 1445412480 s after the epoch
     * (calendar.timegm in Python). */
    const int64_t date_ms = 1445412480LL * 1000;
    int64_t d = -1;
    assert_int_equal(webhook_retry_after_parse("120", 0, &d), 0);
    assert_int_equal(d, 120 * SEC);
    assert_int_equal(webhook_retry_after_parse(" 0 ", 0, &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(webhook_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", date_ms - 5 * SEC, &d), 0);
    assert_int_equal(d, 5 * SEC);
    assert_int_equal(webhook_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", date_ms + HOUR, &d), 0);
    assert_int_equal(d, 0); /* in the past: now */
    assert_int_equal(webhook_retry_after_parse("Thu, 01 Jan 1970 00:00:00 GMT", 0, &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(webhook_retry_after_parse("Sat, 29 Feb 2020 23:59:59 GMT", 1582934400LL * 1000, &d), 0);
    assert_int_equal(d, 86399 * SEC);
    /* Saturates instead of overflowing. */
    assert_int_equal(webhook_retry_after_parse("99999999999999999999999999", 0, &d), 0);
    assert_true(d > WEBHOOK_RETRY_AFTER_MAX_MS);

    const char *bad[] = {"",
                         "   ",
                         "soon",
                         "-5",
                         "+5",
                         "1.5",
                         "5 s",
                         "Wed, 21 Oct 2015 07:28:00 UTC",
                         "Wed, 21 Oct 2015 07:28:00",
                         "Wed, 32 Oct 2015 07:28:00 GMT",
                         "Wed, 21 Foo 2015 07:28:00 GMT",
                         "Wed, 21 Oct 2015 24:28:00 GMT",
                         "Wed, 21 Oct 15 07:28:00 GMT",
                         "Wednesday, 21-Oct-15 07:28:00 GMT",
                         "Wed Oct 21 07:28:00 2015"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (webhook_retry_after_parse(bad[i], 0, &d) != -1) fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(webhook_retry_after_parse(NULL, 0, &d), -1);
}

/* ---- next attempt ------------------------------------------------------- */

static void test_next_attempt(void **state) {
    (void)state;
    webhook_schedule s;
    char err[128];
    assert_int_equal(webhook_schedule_parse("0,5s,5m", &s, err, sizeof err), 0);
    const int64_t now = 1000000;
    int64_t next = 0;
    /* Attempt 1 failed: attempt 2 after 5 s; attempt 2 failed: attempt 3
     * after 5 min; attempt 3 failed: nothing left. */
    assert_int_equal(webhook_next_attempt(&s, 1, now, -1, &next), 0);
    assert_int_equal(next, now + 5 * SEC);
    assert_int_equal(webhook_next_attempt(&s, 2, now, -1, &next), 0);
    assert_int_equal(next, now + 5 * MIN);
    assert_int_equal(webhook_next_attempt(&s, 3, now, -1, &next), 1);
    assert_int_equal(webhook_next_attempt(&s, 40, now, -1, &next), 1);
    /* Before any attempt: the schedule's first delay. */
    assert_int_equal(webhook_next_attempt(&s, 0, now, -1, &next), 0);
    assert_int_equal(next, now);
    /* Retry-After counts only when it asks for longer, and up to a cap. */
    assert_int_equal(webhook_next_attempt(&s, 1, now, 10 * SEC, &next), 0);
    assert_int_equal(next, now + 10 * SEC);
    assert_int_equal(webhook_next_attempt(&s, 1, now, 1 * SEC, &next), 0);
    assert_int_equal(next, now + 5 * SEC);
    assert_int_equal(webhook_next_attempt(&s, 1, now, 0, &next), 0);
    assert_int_equal(next, now + 5 * SEC);
    assert_int_equal(webhook_next_attempt(&s, 1, now, 48 * HOUR, &next), 0);
    assert_int_equal(next, now + WEBHOOK_RETRY_AFTER_MAX_MS);
    /* Retry-After never revives an exhausted schedule. */
    assert_int_equal(webhook_next_attempt(&s, 3, now, 10 * SEC, &next), 1);
    /* A schedule step longer than the cap stays as configured. */
    assert_int_equal(webhook_schedule_parse("0,48h", &s, err, sizeof err), 0);
    assert_int_equal(webhook_next_attempt(&s, 1, now, 30 * HOUR, &next), 0);
    assert_int_equal(next, now + 48 * HOUR);
}

/* ---- allow-list ---------------------------------------------------------- */

#define DEFAULT_ALLOW "127.0.0.1,localhost"

static bool allowed(const char *url, const char *allow) {
    char why[160] = "";
    int rc = url_allowed(url, allow, why, sizeof why);
    if (rc != 0) assert_true(why[0] != '\0');
    return rc == 0;
}

static void test_allow_hosts(void **state) {
    (void)state;
    assert_true(allowed("http://127.0.0.1/hook", DEFAULT_ALLOW));
    assert_true(allowed("http://127.0.0.1", DEFAULT_ALLOW));
    assert_true(allowed("https://localhost/a?b=c#d", DEFAULT_ALLOW));
    assert_true(allowed("HTTP://LOCALHOST/", DEFAULT_ALLOW));
    assert_true(allowed("http://LocalHost:8080/", DEFAULT_ALLOW));
    assert_true(allowed("http://example.com/", " 127.0.0.1 , Example.COM "));
    assert_true(allowed("http://hooks.example.com/x", "hooks.example.com"));
    assert_false(allowed("http://evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1.evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://localhost.evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://evillocalhost/", DEFAULT_ALLOW));
    assert_false(allowed("http://localhost./", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.2/", DEFAULT_ALLOW));
    assert_false(allowed("http://sub.example.com/", "example.com"));
    /* Other spellings of loopback are other strings, not on the list. */
    assert_false(allowed("http://2130706433/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.1/", DEFAULT_ALLOW));
    assert_false(allowed("http://0x7f.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.000.000.001/", DEFAULT_ALLOW));
    /* Empty allow-list allows nothing; an empty entry matches nothing. */
    assert_false(allowed("http://127.0.0.1/", ""));
    assert_false(allowed("http://127.0.0.1/", NULL));
    assert_false(allowed("http://127.0.0.1/", ",,"));
}

static void test_allow_schemes_and_ports(void **state) {
    (void)state;
    assert_true(allowed("http://127.0.0.1:1/", DEFAULT_ALLOW));
    assert_true(allowed("http://127.0.0.1:65535/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:0/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:65536/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:99999999999999999999/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:80:80/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:8o/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:-1/", DEFAULT_ALLOW));
    assert_false(allowed("ftp://127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("file:///etc/passwd", DEFAULT_ALLOW));
    assert_false(allowed("gopher://127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("//127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http:/127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http:///127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http://", DEFAULT_ALLOW));
    assert_false(allowed("", DEFAULT_ALLOW));

    char host[URL_HOST_MAX + 1], why[128];
    int port = -1;
    assert_int_equal(url_host("https://Hooks.Example.com:8443/p", host, sizeof host, &port, why, sizeof why), 0);
    assert_string_equal(host, "Hooks.Example.com");
    assert_int_equal(port, 8443);
    assert_int_equal(url_host("http://a/", host, sizeof host, &port, why, sizeof why), 0);
    assert_int_equal(port, 0);
    /* A host that does not fit is refused, not truncated into another. */
    assert_int_equal(url_host("http://localhost.evil/", host, 10, &port, why, sizeof why), -1);
}

static void test_allow_userinfo_tricks(void **state) {
    (void)state;
    assert_false(allowed("http://127.0.0.1@evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1:80@evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://evil.com@127.0.0.1/", DEFAULT_ALLOW)); /* user info at all */
    assert_false(allowed("http://user:pw@localhost/", DEFAULT_ALLOW));
    assert_false(allowed("http://evil.com#@127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http://evil.com?@127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http://evil.com\\@127.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1\\@evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1%2540evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://%31%32%37.0.0.1/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1 @evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1\t/", DEFAULT_ALLOW));
    assert_false(allowed("http://127.0.0.1\r\nHost: evil.com/", DEFAULT_ALLOW));
    assert_false(allowed("http://loc\xc3\xa1lhost/", DEFAULT_ALLOW));
    /* '@' after the authority is only a path or query character. */
    assert_true(allowed("http://127.0.0.1/a@evil.com", DEFAULT_ALLOW));
    assert_true(allowed("http://127.0.0.1?u=a@b", DEFAULT_ALLOW));
}

static void test_allow_ipv6(void **state) {
    (void)state;
    assert_true(allowed("http://[::1]:9000/x", "::1"));
    assert_true(allowed("http://[::1]/x", "[::1]"));
    assert_true(allowed("http://[::1]", "127.0.0.1, ::1"));
    assert_true(allowed("http://[FE80::1]/", "fe80::1"));
    assert_false(allowed("http://[::1]/", DEFAULT_ALLOW));
    assert_false(allowed("http://[::ffff:127.0.0.1]/", DEFAULT_ALLOW));
    assert_false(allowed("http://[::1%25eth0]/", "::1"));
    assert_false(allowed("http://[::1]x/", "::1"));
    assert_false(allowed("http://[::1]:/", "::1"));
    assert_false(allowed("http://[::1/", "::1"));
    assert_false(allowed("http://[]/", "::1"));
    assert_false(allowed("http://[localhost]/", DEFAULT_ALLOW));
    assert_false(allowed("http://[127.0.0.1]/", DEFAULT_ALLOW));
    assert_false(allowed("http://::1/", "::1"));
}

/* Random printable URLs around allowed ones: never a crash, and whatever is
 * accepted has a plain host that is on the list. */
static void test_allow_random(void **state) {
    (void)state;
    static const char alphabet[] = "ab1.:@/\\?#[]%-_ LOCALHOST127";
    static const char *prefixes[] = {"http://", "https://", "http://127.0.0.1", "http://localhost:", "http://["};
    srand(7);
    char url[64], host[URL_HOST_MAX + 1], why[160];
    for (int i = 0; i < 200000; i++) {
        const char *p = prefixes[rand() % 5];
        size_t len = strlen(p);
        memcpy(url, p, len);
        size_t extra = (size_t)(rand() % 12);
        for (size_t k = 0; k < extra; k++) url[len++] = alphabet[rand() % (sizeof alphabet - 1)];
        url[len] = '\0';
        int port;
        if (url_allowed(url, DEFAULT_ALLOW, why, sizeof why) == 0) {
            assert_int_equal(url_host(url, host, sizeof host, &port, why, sizeof why), 0);
            assert_true(url_host_allowed(host, DEFAULT_ALLOW));
            const char *auth = strstr(url, "://") + 3;
            size_t auth_len = strcspn(auth, "/?#");
            assert_null(memchr(auth, '@', auth_len));
            assert_null(memchr(auth, '\\', auth_len));
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_known_vectors),
        cmocka_unit_test(test_sign_changes_with_every_part),
        cmocka_unit_test(test_sign_key),
        cmocka_unit_test(test_schedule_default),
        cmocka_unit_test(test_schedule_good),
        cmocka_unit_test(test_schedule_bad),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_next_attempt),
        cmocka_unit_test(test_allow_hosts),
        cmocka_unit_test(test_allow_schemes_and_ports),
        cmocka_unit_test(test_allow_userinfo_tricks),
        cmocka_unit_test(test_allow_ipv6),
        cmocka_unit_test(test_allow_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
