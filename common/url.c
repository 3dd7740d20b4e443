/* url.c — the one rule for callback URLs: which host a URL names, and whether
 * that host is on the allow-list (PROMO_WEBHOOK_ALLOW).
 *
 * Ingest applies it when a command arrives (400 on field callback_url) and
 * the webhook dispatcher again before every send, so the two can never
 * disagree about a URL. It is strict on purpose: libcurl must not be able to
 * read another host out of a URL than the one checked here.
 */
#include "url.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool host_char(unsigned char c) {
    return isalnum(c) || c == '.' || c == '-' || c == '_';
}

int url_host(const char *url, char *host, size_t host_size, int *port, char *why, size_t why_size) {
    *port = 0;
    if (host_size) host[0] = '\0';
    for (const char *q = url; *q; q++) {
        unsigned char c = (unsigned char)*q;
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(why, why_size, "URL must be printable ASCII without spaces");
            return -1;
        }
    }
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (strncasecmp(url, "https://", 8) == 0)
        p = url + 8;
    else {
        snprintf(why, why_size, "URL must be http or https");
        return -1;
    }
    size_t auth_len = strcspn(p, "/?#");
    const char *auth_end = p + auth_len;
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@' || *q == '\\' || *q == '%') {
            snprintf(why, why_size, "URL authority must not contain '%c'", *q);
            return -1;
        }
    const char *h = p, *h_end, *port_s = NULL;
    if (*h == '[') {
        const char *close = memchr(h, ']', auth_len);
        if (!close) goto bad_host;
        for (const char *q = h + 1; q < close; q++)
            if (!isxdigit((unsigned char)*q) && *q != ':' && *q != '.') goto bad_host;
        if (close == h + 1 || !memchr(h + 1, ':', (size_t)(close - h - 1))) goto bad_host;
        if (close + 1 < auth_end) {
            if (close[1] != ':') goto bad_host;
            port_s = close + 2;
        }
        h++;
        h_end = close;
    } else {
        h_end = memchr(h, ':', auth_len);
        if (h_end)
            port_s = h_end + 1;
        else
            h_end = auth_end;
        for (const char *q = h; q < h_end; q++)
            if (!host_char((unsigned char)*q)) goto bad_host;
    }
    if (h_end == h) goto bad_host;
    if (port_s) {
        long v = 0;
        if (port_s == auth_end) goto bad_port;
        for (const char *q = port_s; q < auth_end; q++) {
            if (*q < '0' || *q > '9' || v > 65535) goto bad_port;
            v = v * 10 + (*q - '0');
        }
        if (v < 1 || v > 65535) goto bad_port;
        *port = (int)v;
    }
    size_t n = (size_t)(h_end - h);
    if (n > URL_HOST_MAX || n + 1 > host_size) goto bad_host;
    memcpy(host, h, n);
    host[n] = '\0';
    return 0;
bad_host:
    snprintf(why, why_size, "URL has no valid host");
    return -1;
bad_port:
    snprintf(why, why_size, "URL has an invalid port");
    return -1;
}

bool url_host_allowed(const char *host, const char *allow) {
    size_t len = strlen(host);
    if (len == 0 || !allow) return false;
    const char *a = allow;
    while (*a) {
        size_t n = strcspn(a, ",");
        const char *b = a, *e = a + n;
        while (b < e && isspace((unsigned char)*b)) b++;
        while (e > b && isspace((unsigned char)e[-1])) e--;
        if (e - b >= 2 && *b == '[' && e[-1] == ']') b++, e--;
        if ((size_t)(e - b) == len && strncasecmp(b, host, len) == 0) return true;
        a += n;
        if (*a == ',') a++;
    }
    return false;
}

int url_allowed(const char *url, const char *allow, char *why, size_t why_size) {
    char host[URL_HOST_MAX + 1];
    int port;
    if (url_host(url, host, sizeof host, &port, why, why_size) != 0) return -1;
    if (!url_host_allowed(host, allow)) {
        snprintf(why, why_size, "host %s is not on the allow list", host);
        return -1;
    }
    return 0;
}
