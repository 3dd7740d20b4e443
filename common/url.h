/* url.h — callback URL host checks shared by ingest and the webhook
 * dispatcher (see url.c). */
#ifndef PROMO_URL_H
#define PROMO_URL_H

#include <stdbool.h>
#include <stddef.h>

#define URL_HOST_MAX 255

/* Splits an http(s) URL's authority strictly enough that libcurl cannot read
 * another host out of it: printable ASCII only, no user information ('@'),
 * no backslash or percent sign in the authority, a host of [A-Za-z0-9._-] or a
 * bracketed IPv6 literal (no zone), an optional port 1..65535. host receives
 * the host without brackets; *port is the explicit port or 0. Returns 0, or -1
 * with why filled. */
int url_host(const char *url, char *host, size_t host_size, int *port, char *why, size_t why_size);

/* True when host equals (ignoring case) one entry of allow, a comma-separated
 * list of host names and IP literals (IPv6 with or without brackets; blanks
 * around entries ignored). Ports are not part of an entry: any port of an
 * allowed host is allowed. */
bool url_host_allowed(const char *host, const char *allow);

/* url_host() + url_host_allowed(). Returns 0 when the URL may be
 * called, -1 with why filled when not. */
int url_allowed(const char *url, const char *allow, char *why, size_t why_size);

#endif
