/* loadgen.c — promo-loadgen: the load generator every benchmark scenario uses,
 * against our ingest and against the baselines alike, so only the server
 * differs between rows of the table.
 *
 *   promo-loadgen http  [options]   HTTP/1.1 keep-alive load over N connections
 *   promo-loadgen kafka [options]   commands produced straight into Kafka
 *
 * HTTP mode runs one epoll loop over N keep-alive connections, one request in
 * flight per connection. Closed loop (the default) sends the next request as
 * soon as an answer comes back. Open loop (-R rate) fixes each request's
 * intended send time in advance, i/R after the start, and measures latency
 * from that time, not from when a connection was free to send it: a server
 * that stalls then shows the stall in every request that should have been
 * sent during it, instead of hiding it by sending less (coordinated omission).
 *
 * Requests come from operations (--op 'WEIGHT|API_KEY|PATH|BODY'), picked by
 * weight; the path and body are templates where {user} is a user number,
 * {seq} the request's sequence number, {useq} how many requests that user
 * has sent before this one and {prev} the number before that, {tag} the run
 * tag. Users are spread so each appears about equally often, in a shuffled
 * order (-u users, -n requests: 200,000 requests from 100,000 users is every
 * user twice). The request id of every 202 (or of any answer carrying one)
 * goes to the -o file so the caller can wait for and check the outcomes; the
 * answers' "status" fields are counted too, so a server answering outcomes
 * synchronously (the baselines) reports them. Latencies go to a log-bucket
 * histogram (32 sub-buckets per power of two, under 3 % error), overall and
 * by kind of answer (2xx, 503, other), and a JSON summary goes to stdout.
 *
 * For overload runs it also says how connections fared: resets, closes by
 * the server with a request unanswered or while idle, answers with
 * Connection: close, 503s without Retry-After, and per socket the time from
 * its connect to its first answer and whether it closed before any.
 * --timeout-ms gives up on a request unanswered that long (its connection is
 * replaced, as a client would), --drain-s bounds the wait for the last
 * answers. Sockets connect without blocking, so a server whose accept queue
 * is full slows only the connections it drops.
 *
 * Kafka mode encodes commands with the project's codec (Confluent framing,
 * Avro) and produces them with the same partitioner as ingest, so the load
 * reaches the processors without HTTP capping it. Request ids are
 * "<tag>-<seq>" for seq from --first, and user seq % users, so a long load
 * can be sent in chunks (the dev broker keeps only about 5 MB a partition:
 * a consumer further behind than that loses messages).
 */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"
#include "codec.h"
#include "topics.h"
#include "util.h"

#define LOADGEN_OPS_MAX 16
#define LOADGEN_REQ_MAX 8192
#define LOADGEN_RESP_MAX 65536

/* ---- small helpers -------------------------------------------------------- */

static int64_t loadgen_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* xorshift64*: seeded, so a run's request order can be reproduced. */
static uint64_t loadgen_rand(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ULL;
}

/* ---- latency histogram ------------------------------------------------------ */

#define HIST_SUB_BITS 5
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_SUB + 58 * HIST_SUB)

typedef struct loadgen_hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t n;
    int64_t max;
    double sum;
} loadgen_hist;

static int hist_index(int64_t v) {
    if (v < HIST_SUB) return v < 0 ? 0 : (int)v;
    int e = 63 - __builtin_clzll((uint64_t)v);
    int shift = e - HIST_SUB_BITS;
    int i = HIST_SUB + shift * HIST_SUB + (int)((v >> shift) - HIST_SUB);
    return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

/* The upper end of a bucket, so percentiles never flatter the server. */
static int64_t hist_value(int i) {
    if (i < HIST_SUB) return i;
    int shift = (i - HIST_SUB) / HIST_SUB;
    int64_t sub = (i - HIST_SUB) % HIST_SUB + HIST_SUB;
    return ((sub + 1) << shift) - 1;
}

static void hist_add(loadgen_hist *h, int64_t v) {
    h->count[hist_index(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max) h->max = v;
}

static int64_t hist_pct(const loadgen_hist *h, double pct) {
    if (!h->n) return 0;
    uint64_t want = (uint64_t)ceil(pct / 100.0 * (double)h->n);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want) return hist_value(i) < h->max ? hist_value(i) : h->max;
    }
    return h->max;
}

static void loadgen_hist_print(const loadgen_hist *h) {
    printf("{\"n\":%llu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
           (unsigned long long)h->n, (double)hist_pct(h, 50) / 1e3, (double)hist_pct(h, 90) / 1e3,
           (double)hist_pct(h, 99) / 1e3, (double)hist_pct(h, 99.9) / 1e3, (double)h->max / 1e3,
           h->n ? h->sum / (double)h->n / 1e3 : 0.0);
}

/* ---- request templates --------------------------------------------------------- */

typedef struct loadgen_op {
    int weight;
    char key[128];
    char path[512];
    char body[2048];
} loadgen_op;

typedef struct loadgen_vars {
    long long user, seq, useq, prev;
    const char *tag;
} loadgen_vars;

/* Expands {user}, {seq}, {useq}, {prev} and {tag}; any other brace is copied
 * as it is (JSON bodies are full of them). Returns the length, or -1 when the
 * result does not fit. */
static int loadgen_expand(const char *tpl, const loadgen_vars *v, char *out, size_t out_size) {
    size_t n = 0;
    for (const char *p = tpl; *p;) {
        char num[32];
        const char *val = NULL;
        size_t skip = 0;
        if (*p == '{') {
            static const char *const names[] = {"{user}", "{seq}", "{useq}", "{prev}", "{tag}"};
            for (int i = 0; i < 5 && !val; i++) {
                size_t l = strlen(names[i]);
                if (strncmp(p, names[i], l) != 0) continue;
                long long x = i == 0 ? v->user : i == 1 ? v->seq : i == 2 ? v->useq : v->prev;
                if (i == 4)
                    val = v->tag;
                else {
                    snprintf(num, sizeof num, "%lld", x);
                    val = num;
                }
                skip = l;
            }
        }
        if (val) {
            size_t l = strlen(val);
            if (n + l >= out_size) return -1;
            memcpy(out + n, val, l);
            n += l;
            p += skip;
        } else {
            if (n + 1 >= out_size) return -1;
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return (int)n;
}

/* Parses 'WEIGHT|API_KEY|PATH|BODY'. */
static int loadgen_op_parse(const char *s, loadgen_op *op) {
    const char *a = strchr(s, '|');
    const char *b = a ? strchr(a + 1, '|') : NULL;
    const char *c = b ? strchr(b + 1, '|') : NULL;
    if (!c) return -1;
    op->weight = atoi(s);
    if (op->weight <= 0) return -1;
    if ((size_t)(b - a - 1) >= sizeof op->key || (size_t)(c - b - 1) >= sizeof op->path ||
        strlen(c + 1) >= sizeof op->body)
        return -1;
    memcpy(op->key, a + 1, (size_t)(b - a - 1));
    op->key[b - a - 1] = '\0';
    memcpy(op->path, b + 1, (size_t)(c - b - 1));
    op->path[c - b - 1] = '\0';
    strcpy(op->body, c + 1);
    return 0;
}

/* ---- the plan: which user and which operation each request gets ---------------- */

typedef struct loadgen_plan {
    long long n, users;
    uint32_t *user; /* request i -> user number */
    uint32_t *useq; /* per user: requests built so far */
    loadgen_op ops[LOADGEN_OPS_MAX];
    int n_ops, total_weight;
    uint64_t rng;
    const char *tag;
    const char *idem; /* Idempotency-Key prefix, or NULL */
    char host[64];
    int port;
} loadgen_plan;

/* Every user appears n/users times (give or take one), in a shuffled order. */
static int loadgen_plan_users(loadgen_plan *p) {
    p->user = malloc((size_t)p->n * sizeof *p->user);
    p->useq = calloc((size_t)p->users, sizeof *p->useq);
    if (!p->user || !p->useq) return -1;
    for (long long i = 0; i < p->n; i++) p->user[i] = (uint32_t)(i % p->users);
    for (long long i = p->n - 1; i > 0; i--) {
        long long j = (long long)(loadgen_rand(&p->rng) % (uint64_t)(i + 1));
        uint32_t t = p->user[i];
        p->user[i] = p->user[j];
        p->user[j] = t;
    }
    return 0;
}

/* Writes request number seq into out. Returns its length or -1. */
static int loadgen_build(loadgen_plan *p, long long seq, char *out, size_t out_size) {
    int pick = (int)(loadgen_rand(&p->rng) % (uint64_t)p->total_weight);
    const loadgen_op *op = &p->ops[0];
    for (int i = 0; i < p->n_ops; i++) {
        if (pick < p->ops[i].weight) {
            op = &p->ops[i];
            break;
        }
        pick -= p->ops[i].weight;
    }
    uint32_t u = p->user[seq % p->n];
    loadgen_vars v = {u, seq, p->useq[u], p->useq[u] > 0 ? p->useq[u] - 1 : 0, p->tag};
    p->useq[u]++;
    char path[1024], body[4096], idem[160] = "";
    int blen = loadgen_expand(op->body, &v, body, sizeof body);
    if (loadgen_expand(op->path, &v, path, sizeof path) < 0 || blen < 0) return -1;
    if (p->idem) snprintf(idem, sizeof idem, "Idempotency-Key: %s-%lld\r\n", p->idem, seq);
    int n = snprintf(out, out_size,
                     "POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s",
                     path, p->host, p->port, op->key, blen, idem, body);
    return n > 0 && (size_t)n < out_size ? n : -1;
}

static volatile sig_atomic_t loadgen_stop;

/* ---- HTTP connections -------------------------------------------------------------- */

typedef struct loadgen_conn {
    int fd;
    int busy;
    int64_t intended_us; /* when the request in flight should have been sent */
    int64_t sent_us;     /* when it was handed to the socket */
    int64_t born_us;     /* when the socket connected */
    bool served;         /* an answer came back on this socket */
    char req[LOADGEN_REQ_MAX];
    size_t req_len, req_off;
    char resp[LOADGEN_RESP_MAX];
    size_t resp_len;
} loadgen_conn;

typedef struct loadgen_http {
    loadgen_plan plan;
    int n_conns;
    double rate; /* 0 = closed loop */
    double duration_s;
    int epfd;
    loadgen_conn *conns;
    int *idle; /* ring of idle connections: used in turn, like many clients */
    int idle_head, n_idle;
    long long next_seq; /* next request to build */
    long long done, errors, reconnects, backlog_max;
    long long status[600];
    long long outcome_succeeded, outcome_rejected, outcome_pending;
    loadgen_hist hist;
    /* By kind of answer: 2xx (accepted), 503, anything else. */
    loadgen_hist hist_accepted, hist_unavailable, hist_other;
    long long no_retry_after; /* 503 or 429 without a Retry-After header */
    /* How connections ended, besides the server's "Connection: close". */
    long long resets;           /* ECONNRESET or EPIPE */
    long long eof_in_flight;    /* closed by the server with a request unanswered */
    long long eof_idle;         /* an idle keep-alive connection closed by the server */
    long long server_close;     /* answers with Connection: close */
    long long connect_fail;     /* connect() attempts that failed */
    long long timed_out;        /* requests unanswered after timeout_us (connection dropped) */
    long long unanswered;       /* requests still unanswered when the run gave up */
    int64_t timeout_us;         /* 0: none */
    double drain_s;             /* how long to wait for the last answers */
    long long sockets;          /* connected */
    long long sockets_unserved; /* closed (either side) before any answer on them */
    loadgen_hist first_answer;  /* per socket: from its connect to its first answer */
    FILE *ids;
    struct sockaddr_in addr;
} loadgen_http;

static void loadgen_idle_push(loadgen_http *g, loadgen_conn *c) {
    g->idle[(g->idle_head + g->n_idle++) % g->n_conns] = (int)(c - g->conns);
}

static loadgen_conn *loadgen_idle_pop(loadgen_http *g) {
    loadgen_conn *c = &g->conns[g->idle[g->idle_head]];
    g->idle_head = (g->idle_head + 1) % g->n_conns;
    g->n_idle--;
    return c;
}

static int loadgen_connect(loadgen_http *g, loadgen_conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Non-blocking from the start: a server whose accept queue is full
     * drops SYNs, and a blocking connect() would then stall every other
     * connection for seconds. A request sent before the handshake is done
     * waits for EPOLLOUT like any partial send (send() says EAGAIN). */
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    if (connect(c->fd, (struct sockaddr *)&g->addr, sizeof g->addr) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        g->connect_fail++;
        errno = e;
        return -1;
    }
    c->born_us = loadgen_now_us();
    c->served = false;
    g->sockets++;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->busy = 0;
    c->resp_len = 0;
    return 0;
}

/* A broken connection costs its request (counted as an error, never sent
 * again: the server may have acted on it) and is replaced. listed says the
 * connection is in the idle list already (an idle keep-alive connection the
 * server closed). A server that cannot be reached again stops the run. */
static void loadgen_conn_fail(loadgen_http *g, loadgen_conn *c, int listed) {
    if (c->busy) {
        g->errors++;
        g->done++;
    }
    if (c->fd >= 0) {
        epoll_ctl(g->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        if (!c->served) g->sockets_unserved++;
    }
    c->fd = -1;
    c->busy = 0;
    g->reconnects++;
    for (int attempt = 0; attempt < 50 && c->fd < 0; attempt++) {
        if (loadgen_connect(g, c) == 0) break;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (c->fd < 0) {
        fprintf(stderr, "promo-loadgen: cannot reconnect: %s\n", strerror(errno));
        loadgen_stop = 1;
    }
    if (!listed) loadgen_idle_push(g, c);
}

static void loadgen_send(loadgen_http *g, loadgen_conn *c) {
    while (c->req_off < c->req_len) {
        ssize_t w = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (w > 0) {
            c->req_off += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(g->epfd, EPOLL_CTL_MOD, c->fd, &ev);
            return;
        }
        if (w < 0 && (errno == ECONNRESET || errno == EPIPE)) g->resets++;
        loadgen_conn_fail(g, c, 0);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(g->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Starts the next request on an idle connection. Returns 0, or -1 when the
 * request cannot be built (a template too long): the run stops. */
static int loadgen_start(loadgen_http *g, loadgen_conn *c, int64_t intended_us) {
    int n = loadgen_build(&g->plan, g->next_seq, c->req, sizeof c->req);
    if (n < 0) return -1;
    g->next_seq++;
    c->req_len = (size_t)n;
    c->req_off = 0;
    c->resp_len = 0;
    c->busy = 1;
    c->intended_us = intended_us;
    c->sent_us = loadgen_now_us();
    loadgen_send(g, c);
    return 0;
}

/* Finds a JSON string field's value in body (the answers are ours: flat,
 * unescaped ids and status words). Returns its length or -1. */
static int loadgen_json_str(const char *body, size_t len, const char *field, char *out, size_t out_size) {
    char pat[64];
    int pl = snprintf(pat, sizeof pat, "\"%s\":\"", field);
    const char *p = memmem(body, len, pat, (size_t)pl);
    if (!p) return -1;
    p += pl;
    const char *end = memchr(p, '"', len - (size_t)(p - body));
    if (!end || (size_t)(end - p) >= out_size) return -1;
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
    return (int)(end - p);
}

/* Consumes a complete answer if the buffer holds one. Returns 1 when an
 * answer was complete, 0 when more bytes are needed, -1 when it is not
 * HTTP we understand. */
static int loadgen_parse(loadgen_http *g, loadgen_conn *c, int *close_after) {
    char *hend = memmem(c->resp, c->resp_len, "\r\n\r\n", 4);
    if (!hend) return c->resp_len >= sizeof c->resp ? -1 : 0;
    size_t hlen = (size_t)(hend - c->resp) + 4;
    int status = 0;
    if (sscanf(c->resp, "HTTP/1.%*d %d", &status) != 1) return -1;
    long long clen = -1;
    bool retry_after = false;
    *close_after = 0;
    for (char *line = memchr(c->resp, '\n', hlen); line && line < hend;
         line = memchr(line + 1, '\n', (size_t)(hend - line))) {
        line++;
        if (strncasecmp(line, "Content-Length:", 15) == 0) clen = atoll(line + 15);
        if (strncasecmp(line, "Retry-After:", 12) == 0) retry_after = true;
        if (strncasecmp(line, "Connection:", 11) == 0) {
            const char *v = line + 11;
            while (*v == ' ') v++;
            if (strncasecmp(v, "close", 5) == 0) *close_after = 1;
        }
        if (strncasecmp(line, "Transfer-Encoding:", 18) == 0) return -1; /* never sent by our servers */
    }
    if (clen < 0 || clen > (long long)(sizeof c->resp - hlen)) return -1;
    if (c->resp_len < hlen + (size_t)clen) return 0;

    const char *body = c->resp + hlen;
    size_t blen = (size_t)clen;
    if (status >= 0 && status < 600) g->status[status]++;
    if (status >= 200 && status < 300) {
        char rid[PROMO_ID_MAX + 1], st[32];
        if (g->ids && loadgen_json_str(body, blen, "request_id", rid, sizeof rid) > 0) fprintf(g->ids, "%s\n", rid);
        if (loadgen_json_str(body, blen, "status", st, sizeof st) > 0) {
            if (strcmp(st, "SUCCEEDED") == 0)
                g->outcome_succeeded++;
            else if (strcmp(st, "REJECTED") == 0)
                g->outcome_rejected++;
            else if (strcmp(st, "PENDING") == 0)
                g->outcome_pending++;
        }
    } else {
        g->errors++;
    }
    int64_t now = loadgen_now_us();
    hist_add(&g->hist, now - c->intended_us);
    hist_add(status >= 200 && status < 300 ? &g->hist_accepted
             : status == 503               ? &g->hist_unavailable
                                           : &g->hist_other,
             now - c->intended_us);
    if ((status == 503 || status == 429) && !retry_after) g->no_retry_after++;
    if (*close_after) g->server_close++;
    if (!c->served) {
        c->served = true;
        hist_add(&g->first_answer, now - c->born_us);
    }
    g->done++;
    c->busy = 0;
    /* One request in flight per connection: nothing can follow the answer. */
    c->resp_len = 0;
    return 1;
}

static void loadgen_on_event(loadgen_http *g, loadgen_conn *c, uint32_t events) {
    if (events & EPOLLOUT) loadgen_send(g, c);
    if (c->fd < 0 || !(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    for (;;) {
        ssize_t r = recv(c->fd, c->resp + c->resp_len, sizeof c->resp - c->resp_len, 0);
        if (r > 0) {
            c->resp_len += (size_t)r;
            int close_after = 0;
            int rc = c->busy ? loadgen_parse(g, c, &close_after) : -1;
            if (rc < 0) {
                loadgen_conn_fail(g, c, !c->busy);
                return;
            }
            if (rc == 1) {
                if (close_after) {
                    loadgen_conn_fail(g, c, 0);
                    g->reconnects--; /* the server's choice, not a failure */
                    return;
                }
                loadgen_idle_push(g, c);
                return;
            }
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r < 0 && (errno == ECONNRESET || errno == EPIPE))
            g->resets++;
        else if (c->busy)
            g->eof_in_flight++;
        else
            g->eof_idle++;
        loadgen_conn_fail(g, c, !c->busy);
        return;
    }
}

/* Drops the requests that have waited longer than the timeout: each counts
 * as an error and its connection is replaced, as a client giving up would. */
static void loadgen_expire(loadgen_http *g, int64_t now) {
    if (!g->timeout_us) return;
    for (int i = 0; i < g->n_conns; i++) {
        loadgen_conn *c = &g->conns[i];
        if (c->fd >= 0 && c->busy && now - c->sent_us > g->timeout_us) {
            g->timed_out++;
            loadgen_conn_fail(g, c, 0);
        }
    }
}

static void loadgen_on_signal(int sig) {
    (void)sig;
    loadgen_stop = 1;
}

static int loadgen_http_run(loadgen_http *g) {
    g->epfd = epoll_create1(0);
    g->conns = calloc((size_t)g->n_conns, sizeof *g->conns);
    g->idle = calloc((size_t)g->n_conns, sizeof *g->idle);
    if (g->epfd < 0 || !g->conns || !g->idle) return -1;
    for (int i = 0; i < g->n_conns; i++) {
        g->conns[i].fd = -1;
        if (loadgen_connect(g, &g->conns[i]) != 0) {
            fprintf(stderr, "promo-loadgen: cannot connect to %s:%d: %s\n", g->plan.host, g->plan.port,
                    strerror(errno));
            return -1;
        }
        loadgen_idle_push(g, &g->conns[i]);
    }
    long long n = g->plan.n;
    int64_t t0 = loadgen_now_us();
    int64_t deadline = g->duration_s > 0 ? t0 + (int64_t)(g->duration_s * 1e6) : INT64_MAX;
    int64_t drain_since = 0;
    long long due_seq = 0; /* open loop: requests whose intended time has come */
    struct epoll_event evs[256];
    for (;;) {
        int64_t now = loadgen_now_us();
        bool sending = g->next_seq < n && now < deadline && !loadgen_stop;
        if (sending) {
            if (g->rate > 0) {
                long long due = (long long)((double)(now - t0) * g->rate / 1e6) + 1;
                due_seq = due < n ? due : n;
                while (g->next_seq < due_seq && g->n_idle > 0) {
                    int64_t intended = t0 + (int64_t)((double)g->next_seq * 1e6 / g->rate);
                    if (loadgen_start(g, loadgen_idle_pop(g), intended)) return -1;
                }
                if (due_seq - g->next_seq > g->backlog_max) g->backlog_max = due_seq - g->next_seq;
            } else {
                while (g->next_seq < n && g->n_idle > 0)
                    if (loadgen_start(g, loadgen_idle_pop(g), loadgen_now_us())) return -1;
            }
        }
        if (!sending && g->n_idle == g->n_conns) break;
        /* Answers that never come must not hang the run. */
        if (!sending && !drain_since) drain_since = now;
        if (!sending && now - drain_since > (int64_t)(g->drain_s * 1e6)) {
            fprintf(stderr, "promo-loadgen: %d answers still missing after %.0f s\n", g->n_conns - g->n_idle,
                    g->drain_s);
            g->errors += g->n_conns - g->n_idle;
            g->unanswered += g->n_conns - g->n_idle;
            break;
        }
        loadgen_expire(g, now);
        int timeout = 100;
        if (sending && g->rate > 0 && g->n_idle > 0) {
            int64_t next_at = t0 + (int64_t)((double)g->next_seq * 1e6 / g->rate);
            int64_t wait = (next_at - loadgen_now_us()) / 1000;
            timeout = wait < 0 ? 0 : wait > 100 ? 100 : (int)wait;
        }
        int k = epoll_wait(g->epfd, evs, 256, timeout);
        if (k < 0 && errno != EINTR) return -1;
        for (int i = 0; i < k; i++) loadgen_on_event(g, evs[i].data.ptr, evs[i].events);
    }
    double secs = (double)(loadgen_now_us() - t0) / 1e6;
    const loadgen_hist *h = &g->hist;
    printf("{\"mode\":\"%s\",\"connections\":%d,\"rate\":%.0f,\"requests\":%lld,\"completed\":%lld,"
           "\"errors\":%lld,\"reconnects\":%lld,\"duration_s\":%.3f,\"throughput\":%.1f,\"backlog_max\":%lld,",
           g->rate > 0 ? "open" : "closed", g->n_conns, g->rate, g->next_seq, g->done, g->errors, g->reconnects, secs,
           secs > 0 ? (double)(g->done - g->errors) / secs : 0.0, g->backlog_max);
    printf("\"status\":{");
    const char *sep = "";
    for (int s = 0; s < 600; s++)
        if (g->status[s]) {
            printf("%s\"%d\":%lld", sep, s, g->status[s]);
            sep = ",";
        }
    printf("},\"outcomes\":{\"SUCCEEDED\":%lld,\"REJECTED\":%lld,\"PENDING\":%lld},", g->outcome_succeeded,
           g->outcome_rejected, g->outcome_pending);
    printf("\"latency_ms\":");
    loadgen_hist_print(h);
    printf(",\"latency_ms_by_class\":{\"accepted\":");
    loadgen_hist_print(&g->hist_accepted);
    printf(",\"unavailable\":");
    loadgen_hist_print(&g->hist_unavailable);
    printf(",\"other\":");
    loadgen_hist_print(&g->hist_other);
    printf("},\"no_retry_after\":%lld,\"connection\":{\"resets\":%lld,\"eof_in_flight\":%lld,\"eof_idle\":%lld,"
           "\"server_close\":%lld,\"connect_failures\":%lld,\"timed_out\":%lld,\"unanswered\":%lld},"
           "\"sockets\":{\"opened\":%lld,\"closed_unserved\":%lld,\"first_answer_ms\":",
           g->no_retry_after, g->resets, g->eof_in_flight, g->eof_idle, g->server_close, g->connect_fail, g->timed_out,
           g->unanswered, g->sockets, g->sockets_unserved);
    loadgen_hist_print(&g->first_answer);
    printf("}}\n");
    return 0;
}

/* ---- Kafka mode ------------------------------------------------------------------------ */

typedef struct loadgen_kafka {
    const char *cmd; /* issue | earn | order */
    const char *entity;
    long long create;          /* quantity or stock of the entity to create first; 0 = none */
    long long first, n, users; /* sequence numbers first .. first + n - 1 */
    const char *tag;
    long long delivered, failed;
} loadgen_kafka;

static void loadgen_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)m;
    loadgen_kafka *k = opaque;
    if (m->err)
        k->failed++;
    else
        k->delivered++;
}

static int loadgen_kafka_cmd(const loadgen_kafka *k, long long seq, long long user, int64_t now, promo_cmd *cmd) {
    memset(cmd, 0, sizeof *cmd);
    snprintf(cmd->request_id, sizeof cmd->request_id, "%s-%lld", k->tag, seq);
    cmd->submitted_at = now;
    if (seq < 0) { /* the create command */
        snprintf(cmd->request_id, sizeof cmd->request_id, "%s-create", k->tag);
        if (strcmp(k->cmd, "order") == 0) {
            cmd->type = CMD_CREATE_TIME_SALE;
            time_sale_def *s = &cmd->u.create_sale;
            snprintf(s->sale_id, sizeof s->sale_id, "%s", k->entity);
            snprintf(s->product_id, sizeof s->product_id, "bench-product");
            snprintf(s->name, sizeof s->name, "bench sale");
            s->original_price = 20000;
            s->sale_price = 9900;
            s->stock = k->create;
            s->per_user_limit = 1;
            s->starts_at = now - 60000;
            s->ends_at = now + 86400000;
            return 0;
        }
        cmd->type = CMD_CREATE_COUPON_POLICY;
        coupon_policy_def *p = &cmd->u.create_policy;
        snprintf(p->policy_id, sizeof p->policy_id, "%s", k->entity);
        snprintf(p->name, sizeof p->name, "bench policy");
        p->discount_type = DISCOUNT_FIXED;
        p->discount_value = 1000;
        p->total_quantity = k->create;
        p->per_user_limit = 1;
        p->issue_starts_at = now - 60000;
        p->issue_ends_at = now + 86400000;
        p->has_valid_days = true;
        p->valid_days = 7;
        return 0;
    }
    if (strcmp(k->cmd, "issue") == 0) {
        cmd->type = CMD_ISSUE_COUPON;
        snprintf(cmd->u.issue.policy_id, sizeof cmd->u.issue.policy_id, "%s", k->entity);
        snprintf(cmd->u.issue.user_id, sizeof cmd->u.issue.user_id, "u%lld", user);
    } else if (strcmp(k->cmd, "earn") == 0) {
        cmd->type = CMD_EARN_POINTS;
        snprintf(cmd->u.earn.user_id, sizeof cmd->u.earn.user_id, "%s%lld", k->entity ? k->entity : "u", user);
        cmd->u.earn.amount = 1000;
        snprintf(cmd->u.earn.reason, sizeof cmd->u.earn.reason, "bench");
    } else if (strcmp(k->cmd, "order") == 0) {
        cmd->type = CMD_PLACE_ORDER;
        snprintf(cmd->u.place_order.sale_id, sizeof cmd->u.place_order.sale_id, "%s", k->entity);
        snprintf(cmd->u.place_order.user_id, sizeof cmd->u.place_order.user_id, "u%lld", user);
        cmd->u.place_order.quantity = 1;
    } else {
        return -1;
    }
    return 0;
}

static int loadgen_kafka_run(loadgen_kafka *k) {
    char errstr[512], bootstrap[1024];
    int rc = -1;
    codec *cd = NULL;
    rd_kafka_t *rk = NULL;
    codec_buf buf = {0};
    if (cfg_kafka_bootstrap(bootstrap, sizeof bootstrap, errstr, sizeof errstr) != 0) {
        fprintf(stderr, "promo-loadgen: %s\n", errstr);
        return -1;
    }
    if (!(cd = codec_new(errstr, sizeof errstr))) {
        fprintf(stderr, "promo-loadgen: codec: %s\n", errstr);
        return -1;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Same partitioner as ingest, so a key lands where ingest would put it. */
    const char *settings[][2] = {
        {"bootstrap.servers", bootstrap},
        {"client.id", "promo-loadgen"},
        {"acks", "all"},
        {"enable.idempotence", "true"},
        {"partitioner", "murmur2_random"},
        {"linger.ms", "5"},
        {"batch.num.messages", "10000"},
        {"queue.buffering.max.messages", "1000000"},
        {"max.in.flight.requests.per.connection", cfg_kafka_max_in_flight()},
    };
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        if (rd_kafka_conf_set(conf, settings[i][0], settings[i][1], errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "promo-loadgen: %s\n", errstr);
            rd_kafka_conf_destroy(conf);
            goto out;
        }
    rd_kafka_conf_set_opaque(conf, k);
    rd_kafka_conf_set_dr_msg_cb(conf, loadgen_on_delivery);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr))) {
        fprintf(stderr, "promo-loadgen: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    int64_t t0 = loadgen_now_us();
    long long produced = 0;
    for (long long seq = k->create > 0 ? -1 : k->first; seq < k->first + k->n && !loadgen_stop;
         seq = seq < 0 ? k->first : seq + 1) {
        promo_cmd cmd;
        /* Users in turn: with users == n each is new, with n/2 each comes twice. */
        long long user = seq < 0 ? 0 : seq % k->users;
        if (loadgen_kafka_cmd(k, seq, user, now_ms(), &cmd) != 0) {
            fprintf(stderr, "promo-loadgen: unknown --cmd %s\n", k->cmd);
            goto out;
        }
        char key[PROMO_ID_MAX + 1];
        if (cmd_entity_key(&cmd, key, sizeof key) != 0 ||
            codec_encode_cmd(cd, &cmd, &buf, errstr, sizeof errstr) != CODEC_OK) {
            fprintf(stderr, "promo-loadgen: encode: %s\n", errstr);
            goto out;
        }
        const char *topic = topic_cmd(cmd_domain(cmd.type));
        for (;;) {
            rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                                        RD_KAFKA_V_VALUE(buf.data, buf.len),
                                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                rd_kafka_poll(rk, 10);
                continue;
            }
            if (err) {
                fprintf(stderr, "promo-loadgen: produce: %s\n", rd_kafka_err2str(err));
                goto out;
            }
            break;
        }
        produced++;
        /* The create must be in the log before the commands that need it:
         * same key, same partition, and acks=all with idempotence keep order. */
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 120000);
    double secs = (double)(loadgen_now_us() - t0) / 1e6;
    printf("{\"mode\":\"kafka\",\"cmd\":\"%s\",\"produced\":%lld,\"delivered\":%lld,\"failed\":%lld,"
           "\"duration_s\":%.3f,\"throughput\":%.1f}\n",
           k->cmd, produced, k->delivered, k->failed, secs, secs > 0 ? (double)k->delivered / secs : 0.0);
    rc = k->failed == 0 && k->delivered == produced ? 0 : -1;
out:
    if (rk) rd_kafka_destroy(rk);
    codec_destroy(cd);
    free(buf.data);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

static void loadgen_usage(void) {
    fprintf(stderr,
            "usage: promo-loadgen http [-h host] -p port [-c conns] [-n requests | -d seconds] [-R rate]\n"
            "                          [-u users] [-k api_key] [--path TPL --body TPL | --op 'W|KEY|PATH|BODY'...]\n"
            "                          [--idem PREFIX] [--tag TAG] [-o ids_file] [--seed N]\n"
            "                          [--timeout-ms MS] [--drain-s S]\n"
            "       promo-loadgen kafka --cmd issue|earn|order [--entity ID] [--create N] -n count [-u users]\n"
            "                          [--first SEQ] [--tag TAG]   (bootstrap from PROMO_KAFKA_BOOTSTRAP[_FILE])\n"
            "templates: {user} {seq} {useq} {prev} {tag}\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        loadgen_usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {0};
    sa.sa_handler = loadgen_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    log_init("promo-loadgen");
    const char *mode = argv[1];
    long long n = 0, users = 1;
    const char *tag = "bench", *path = NULL, *body = "{}", *key = "dev-client-key", *ids = NULL;
    const char *cmd = NULL, *entity = NULL, *idem = NULL;
    long long create = 0, seed = 1, first = 0;
    double rate = 0, duration = 0;
    int conns = 64;
    loadgen_http *g = calloc(1, sizeof *g);
    if (!g) return 1;
    snprintf(g->plan.host, sizeof g->plan.host, "127.0.0.1");
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            loadgen_usage();
            return 2;
        }
        i++;
        if (!strcmp(a, "-h"))
            snprintf(g->plan.host, sizeof g->plan.host, "%s", v);
        else if (!strcmp(a, "-p"))
            g->plan.port = atoi(v);
        else if (!strcmp(a, "-c"))
            conns = atoi(v);
        else if (!strcmp(a, "-n"))
            n = atoll(v);
        else if (!strcmp(a, "-d"))
            duration = atof(v);
        else if (!strcmp(a, "-R"))
            rate = atof(v);
        else if (!strcmp(a, "-u"))
            users = atoll(v);
        else if (!strcmp(a, "-k"))
            key = v;
        else if (!strcmp(a, "-o"))
            ids = v;
        else if (!strcmp(a, "--path"))
            path = v;
        else if (!strcmp(a, "--body"))
            body = v;
        else if (!strcmp(a, "--idem"))
            idem = v;
        else if (!strcmp(a, "--tag"))
            tag = v;
        else if (!strcmp(a, "--seed"))
            seed = atoll(v);
        else if (!strcmp(a, "--cmd"))
            cmd = v;
        else if (!strcmp(a, "--entity"))
            entity = v;
        else if (!strcmp(a, "--create"))
            create = atoll(v);
        else if (!strcmp(a, "--first"))
            first = atoll(v);
        else if (!strcmp(a, "--timeout-ms"))
            g->timeout_us = atoll(v) * 1000;
        else if (!strcmp(a, "--drain-s"))
            g->drain_s = atof(v);
        else if (!strcmp(a, "--op")) {
            if (g->plan.n_ops == LOADGEN_OPS_MAX || loadgen_op_parse(v, &g->plan.ops[g->plan.n_ops]) != 0) {
                fprintf(stderr, "promo-loadgen: bad --op %s (want 'WEIGHT|API_KEY|PATH|BODY')\n", v);
                return 2;
            }
            g->plan.total_weight += g->plan.ops[g->plan.n_ops++].weight;
        } else {
            loadgen_usage();
            return 2;
        }
    }
    if (users < 1 || users > UINT32_MAX) users = 1;
    if (!strcmp(mode, "kafka")) {
        if (!cmd || n < 1 || ((!strcmp(cmd, "issue") || !strcmp(cmd, "order")) && !entity)) {
            loadgen_usage();
            return 2;
        }
        loadgen_kafka k = {
            .cmd = cmd, .entity = entity, .create = create, .first = first, .n = n, .users = users, .tag = tag};
        free(g);
        return loadgen_kafka_run(&k) == 0 ? 0 : 1;
    }
    if (strcmp(mode, "http") != 0 || g->plan.port <= 0 || conns < 1 || (n < 1 && duration <= 0)) {
        loadgen_usage();
        return 2;
    }
    if (path) {
        if (g->plan.n_ops == LOADGEN_OPS_MAX) return 2;
        loadgen_op *op = &g->plan.ops[g->plan.n_ops++];
        op->weight = 1;
        snprintf(op->key, sizeof op->key, "%s", key);
        snprintf(op->path, sizeof op->path, "%s", path);
        snprintf(op->body, sizeof op->body, "%s", body);
        g->plan.total_weight += 1;
    }
    if (g->plan.n_ops == 0) {
        fprintf(stderr, "promo-loadgen: give --path or --op\n");
        return 2;
    }
    /* A timed run still needs a plan: size it for a fast server. */
    if (n < 1) n = (long long)(duration * (rate > 0 ? rate : 1000000));
    g->plan.n = n;
    g->plan.users = users;
    g->plan.tag = tag;
    g->plan.idem = idem;
    g->plan.rng = 0x2545F4914F6CDD1DULL ^ (uint64_t)seed;
    g->n_conns = conns;
    if (g->drain_s <= 0) g->drain_s = 60;
    g->rate = rate;
    g->duration_s = duration;
    g->addr.sin_family = AF_INET;
    g->addr.sin_port = htons((uint16_t)g->plan.port);
    if (inet_pton(AF_INET, g->plan.host, &g->addr.sin_addr) != 1) {
        fprintf(stderr, "promo-loadgen: -h takes an IPv4 address\n");
        return 2;
    }
    if (loadgen_plan_users(&g->plan) != 0) {
        fprintf(stderr, "promo-loadgen: out of memory\n");
        return 1;
    }
    if (ids && !(g->ids = fopen(ids, "w"))) {
        fprintf(stderr, "promo-loadgen: %s: %s\n", ids, strerror(errno));
        return 1;
    }
    int rc = loadgen_http_run(g);
    if (g->ids && fclose(g->ids) != 0) rc = -1;
    if (rc != 0) fprintf(stderr, "promo-loadgen: run failed\n");
    return rc == 0 ? 0 : 1;
}
