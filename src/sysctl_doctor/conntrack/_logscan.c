/* The C twin of `kernel_log.summarise_block`'s per-line work (issue #12): find the conntrack lines of a
 * buffer of whole kernel-log lines, read the fields a summary needs (flow, message wording, line, time
 * stamp) and count them per (wording, directed flow), across calls, until Python takes the counts
 * (`flush`, in the shape of a `BlockSummary`) and folds them into its `FlowTable`.
 *
 * It reads a line only when it is certain the reference reader reads it the same way: the grammar is the
 * summary path's regular expressions (_SUMMARY_LINE, _SUMMARY_JSON), made stricter (printable ASCII only
 * after the logger; no '"' on a text line; one logger per line; short time stamps). Any other line (and
 * the lines after it up to the next line it can read) is handed back as an "odd region" that Python reads
 * with its own summary path or the reference reader. Every length and offset is checked against the
 * buffer; memory is bounded by caps on flows, keys, wordings and stored bytes (past them: "flush first").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define TOKEN "nf_ct_"
#define TOKEN_LEN 6
#define MSGKEY "\"MESSAGE\""
#define MSGKEY_LEN 9

#define STAMP_MAX 200     /* a time stamp prefix longer than this: odd line */
#define WORDING_MAX 1024  /* a message longer than this: odd line */
#define FLOW_CAP 65536    /* directed flows held before Python must take them */
#define KEY_CAP 131072    /* (wording, directed flow) keys held */
#define WORDING_CAP 4096  /* distinct wordings held */
#define ARENA_CAP (32u << 20)

enum { ST_DONE = 0, ST_ODD = 1, ST_FLUSH = 2 };
enum { MODE_NONE = 0, MODE_TEXT = 1, MODE_JOURNAL = 2 };

#define KEY_INLINE 48  /* directed flow keys up to this long are held in the Flow itself */
#define FLOW_KEYS 4    /* (wording -> key) pairs a Flow remembers (most flows have a few wordings) */

typedef struct {
    /* first cache line: what a lookup reads */
    uint64_t hash;
    uint32_t sd_len, ports_len;
    char key[KEY_INLINE];  /* sd bytes then ports bytes (or in the arena at key_off when longer) */
    /* second: what counting a record writes */
    uint32_t kw[FLOW_KEYS];  /* the flow's first wordings ... */
    uint32_t kc[FLOW_KEYS];  /* ... and their counts not yet added to keys[kk[i]].count */
    uint32_t nk, touched, pending_len, pad;  /* touched: call number of the last scan that saw it */
    long long last_line;
    const char *pending_stamp;  /* last stamp still in the caller's buffer */
    /* the rest */
    uint32_t kk[FLOW_KEYS];
    size_t key_off;
    long long first_line;
    size_t first_off; uint32_t first_len;
    size_t last_off; uint32_t last_len, last_cap;
} __attribute__((aligned(64))) Flow;

typedef struct {
    uint64_t hash;
    char *text; size_t len;      /* message without its digits */
    char *sample; size_t sample_len; /* one stripped message with that wording */
} Wording;

typedef struct {
    uint32_t wording, flow;
    long long count;
} Key;

typedef struct {
    PyObject_HEAD
    int mode;
    /* arena of owned bytes */
    char *arena; size_t arena_len, arena_cap;
    Flow *flows; size_t nflows, flows_cap;
    int32_t *flow_slots; size_t flow_slots_n;   /* open addressing: index+1, 0 empty */
    Key *keys; size_t nkeys, keys_cap;
    int32_t *key_slots; size_t key_slots_n;
    Wording *wordings; size_t nwordings;
    int32_t *word_slots; size_t word_slots_n;
    uint32_t *touched; size_t ntouched, touched_cap;
    uint32_t call;
    long long records;  /* pending records (counted since the last flush) */
    int busy;  /* a scan runs without the GIL: no other call may touch this scanner meanwhile */
    unsigned long long searched;  /* bytes the logger search has looked at (the work of a scan; tests hold it linear) */
} Scanner;

/* ---- helpers ---------------------------------------------------------------------------------- */

static inline uint64_t hash_bytes(uint64_t h, const char *p, size_t n) {
    /* FNV-1a over 8-byte words, the last word overlapping the one before (a short string: two
     * overlapping 4-byte halves, or three bytes), and the length; then a final mix */
    const uint64_t prime = 0x100000001b3ULL;
    uint64_t w;
    if (n >= 8) {
        size_t left = n;
        while (left > 8) {
            memcpy(&w, p, 8);
            h = (h ^ w) * prime;
            p += 8; left -= 8;
        }
        memcpy(&w, p + left - 8, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4); memcpy(&b, p + n - 4, 4);
        w = (uint64_t)a << 32 | b;
    } else {
        w = n ? (uint64_t)(unsigned char)p[0] << 16 | (uint64_t)(unsigned char)p[n / 2] << 8 | (unsigned char)p[n - 1] : 0;
    }
    h = (h ^ w ^ (uint64_t)n << 56) * prime;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ULL;
    h ^= h >> 32;
    return h;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether every byte of [p, p+n) is printable ASCII (0x20..0x7e) other than `forbid`. */
static int printable(const char *p, size_t n, char forbid) {
#ifdef __SSE2__
    const __m128i lo = _mm_set1_epi8(0x20), hi = _mm_set1_epi8(0x7e), no = _mm_set1_epi8(forbid);
    while (n >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        /* signed compares: bytes >= 0x80 are negative, so "< 0x20" catches them with the controls */
        __m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmpgt_epi8(x, hi), _mm_cmplt_epi8(x, lo)), _mm_cmpeq_epi8(x, no));
        if (_mm_movemask_epi8(bad)) return 0;
        p += 16; n -= 16;
    }
#else
    while (n >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        uint64_t lt = (x - ONES * 0x20) & ~x & HIGHS;          /* some byte < 0x20 (or >= 0x80) */
        uint64_t gt = ((x + ONES * (127 - 0x7e)) | x) & HIGHS;  /* some byte > 0x7e */
        uint64_t y = x ^ (ONES * (unsigned char)forbid);
        uint64_t eq = (y - ONES) & ~y & HIGHS;                  /* some byte == forbid */
        if (lt | gt | eq) return 0;
        p += 8; n -= 8;
    }
#endif
    while (n--) {
        unsigned char c = (unsigned char)*p++;
        if (c < 0x20 || c > 0x7e || c == (unsigned char)forbid) return 0;
    }
    return 1;
}

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }
static inline int is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
/* bytes \s (and bytes.strip()'s whitespace) */
static inline int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c'; }

#define INLINE static inline __attribute__((always_inline))

INLINE int starts(const char *p, const char *e, const char *lit, size_t n) {
    return (size_t)(e - p) >= n && __builtin_memcmp(p, lit, n) == 0;
}

/* The first space in [p, e), or e. */
INLINE const char *to_space(const char *p, const char *e) {
    while (p + 8 <= e) {
        uint64_t x;
        memcpy(&x, p, 8);
        x ^= ONES * 0x20;
        uint64_t z = (x - ONES) & ~x & HIGHS;  /* a zero byte: a space */
        if (z) return p + (__builtin_ctzll(z) >> 3);
        p += 8;
    }
    while (p < e && *p != ' ') p++;
    return p;
}

/* The first "nf_ct_" in [p, end): 16 candidates at a time ('n' at i and '_' at i+2), else by its first '_'. */
static const char *find_token(const char *p, const char *end) {
#ifdef __SSE2__
    const __m128i n = _mm_set1_epi8('n'), u = _mm_set1_epi8('_');
    while (p + 16 + TOKEN_LEN <= end) {
        __m128i a = _mm_loadu_si128((const __m128i *)p), b = _mm_loadu_si128((const __m128i *)(p + 2));
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, n), _mm_cmpeq_epi8(b, u)));
        while (m) {
            const char *c = p + __builtin_ctz(m);
            if (c[1] == 'f' && c[3] == 'c' && c[4] == 't' && c[5] == '_') return c;
            m &= m - 1;
        }
        p += 16;
    }
#endif
    const char *q = p + 2;
    while (q + 4 <= end) {
        const char *u = memchr(q, '_', (size_t)(end - q));
        if (u == NULL || u + 4 > end) return NULL;
        if (u[-2] == 'n' && u[-1] == 'f' && u[1] == 'c' && u[2] == 't' && u[3] == '_') return u - 2;
        q = u + 1;
    }
    return NULL;
}

/* The first "URGP=" in [p, end). */
static const char *find_urgp(const char *p, const char *end) {
    while (p + 5 <= end) {
        const char *u = memchr(p, 'U', (size_t)(end - p));
        if (u == NULL || u + 5 > end) return NULL;
        if (u[1] == 'R' && u[2] == 'G' && u[3] == 'P' && u[4] == '=') return u;
        p = u + 1;
    }
    return NULL;
}

/* "KEY=" then a value up to the next space (the fields part is printable with single spaces only);
 * `digits`: the value must be \d+; `nonempty`: \S+. Returns the value's end (at the space) or NULL. */
INLINE const char *field(const char *p, const char *e, const char *key, size_t klen, int digits, int nonempty,
                         const char **value) {
    if (!starts(p, e, key, klen)) return NULL;
    p += klen;
    const char *v = p, *sp = p;
    if (digits) {
        while (sp < e && is_digit(*sp)) sp++;
    } else {
        sp = to_space(sp, e);
    }
    if (sp >= e || *sp != ' ') return NULL;  /* every field here is followed by a space */
    if (nonempty && sp == v) return NULL;
    if (value) *value = v;
    return sp;
}

/* What one conntrack line holds for the summary. */
typedef struct {
    const char *stamp; size_t stamp_len;
    const char *msg; size_t msg_len;   /* stripped */
    const char *sd; size_t sd_len;
    const char *ports; size_t ports_len;
    int mode;
} Parsed;

/* The body from the logger token `t` to `e` (end of the line without its trailing CRs, or the closing
 * quote of a journal MESSAGE): _SUMMARY_BODY on printable bytes. 1 if read. */
static int parse_body(const char *t, const char *e, Parsed *out) {
    const char *p = t + TOKEN_LEN;
    if (starts(p, e, "proto_", 6)) {
        p += 6;
        const char *d = p;
        while (p < e && is_digit(*p)) p++;
        if (p == d) return 0;
    } else if (starts(p, e, "tcp", 3)) {
        p += 3;
    } else {
        return 0;
    }
    if (!starts(p, e, ": ", 2)) return 0;
    p += 2;
    const char *m0 = p;
    /* the message runs to the first "IN=", which must follow a space (the one of ": " counts) */
    const char *in = NULL;
    for (const char *q = p; q + 3 <= e; ) {
        const char *i = memchr(q, 'I', (size_t)(e - q));
        if (i == NULL || i + 3 > e) break;
        if (i[1] == 'N' && i[2] == '=') { in = i; break; }
        q = i + 1;
    }
    if (in == NULL || in[-1] != ' ') return 0;
    const char *m1 = in;
    while (m0 < m1 && is_space(*m0)) m0++;
    while (m1 > m0 && is_space(m1[-1])) m1--;
    if ((size_t)(m1 - m0) > WORDING_MAX) return 0;
    out->msg = m0; out->msg_len = (size_t)(m1 - m0);
    const char *v;
    p = in;
    if (!(p = field(p, e, "IN=", 3, 0, 0, NULL))) return 0;
    p++;
    if (!(p = field(p, e, "OUT=", 4, 0, 0, NULL))) return 0;
    p++;
    if (starts(p, e, "MAC=", 4)) {
        if (!(p = field(p, e, "MAC=", 4, 0, 0, NULL))) return 0;
        p++;
    }
    if (!(p = field(p, e, "SRC=", 4, 0, 1, &v))) return 0;
    const char *sd = v;
    p++;
    if (!(p = field(p, e, "DST=", 4, 0, 1, NULL))) return 0;
    out->sd = sd; out->sd_len = (size_t)(p - sd);
    p++;
    if (!(p = field(p, e, "LEN=", 4, 1, 1, NULL))) return 0;
    p++;
    if (starts(p, e, "TOS=", 4)) {
        if (!(p = field(p, e, "TOS=", 4, 0, 1, NULL))) return 0;
        p++;
        if (!(p = field(p, e, "PREC=", 5, 0, 1, NULL))) return 0;
        p++;
        if (!(p = field(p, e, "TTL=", 4, 1, 1, NULL))) return 0;
        p++;
        if (!(p = field(p, e, "ID=", 3, 1, 1, NULL))) return 0;
        p++;
        while (starts(p, e, "CE ", 3) || starts(p, e, "DF ", 3) || starts(p, e, "MF ", 3)) p += 3;
    } else {
        if (!(p = field(p, e, "TC=", 3, 1, 1, NULL))) return 0;
        p++;
        if (!(p = field(p, e, "HOPLIMIT=", 9, 1, 1, NULL))) return 0;
        p++;
        if (!(p = field(p, e, "FLOWLBL=", 8, 1, 1, NULL))) return 0;
        p++;
    }
    if (!starts(p, e, "PROTO=TCP ", 10)) return 0;
    p += 10;
    if (!(p = field(p, e, "SPT=", 4, 1, 1, &v))) return 0;
    const char *ports = v;
    p++;
    if (!(p = field(p, e, "DPT=", 4, 1, 1, NULL))) return 0;
    out->ports = ports; out->ports_len = (size_t)(p - ports);
    p++;
    if (!starts(p, e, "SEQ=", 4)) return 0;
    p += 4;
    /* URGP= somewhere after: the record is complete */
    if (find_urgp(p, e) == NULL) return 0;
    return 1;
}

/* A text line [ls, le) whose only logger token is at t (_SUMMARY_LINE). */
static int parse_text(const char *ls, const char *le, const char *t, Parsed *out) {
    if (ls < le && *ls == '{') return 0;
    if ((size_t)(t - ls) > STAMP_MAX) return 0;
    if (t > ls && is_word(t[-1])) return 0;
    if (!printable(ls, (size_t)(t - ls), '"')) {  /* printable, no '"'; tabs too (dmesg -T, some syslogs) */
        for (const char *q = ls; q < t; q++) {
            unsigned char c = (unsigned char)*q;
            if ((c < 0x20 && c != '\t') || c > 0x7e || c == '"') return 0;
        }
    }
    const char *e = le;
    while (e > t && e[-1] == '\r') e--;
    if (!printable(t, (size_t)(e - t), '"')) return 0;
    if (!parse_body(t, e, out)) return 0;
    out->stamp = ls; out->stamp_len = (size_t)(t - ls);
    out->mode = MODE_TEXT;
    return 1;
}

/* The first '"' in [p, e), or NULL (keys and values are short: no call). */
INLINE const char *find_quote(const char *p, const char *e) {
#ifdef __SSE2__
    const __m128i dq = _mm_set1_epi8('"');
    while (p + 16 <= e) {
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)p), dq));
        if (m) return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    for (; p < e; p++) if (*p == '"') return p;
    return NULL;
}

/* Where text_line stopped at q (its first byte that is not text, or end): after the CRs there, the line's
 * '\n' or end, else NULL. */
static inline const char *text_line_stop(const char *q, const char *end, const char **body_end) {
    *body_end = q;
    while (q < end && *q == '\r') q++;
    return q == end || *q == '\n' ? q : NULL;
}

/* text_line from q, a byte at a time (then the CRs that may end the line). */
static const char *text_line_tail(const char *q, const char *end, const char **body_end, char forbid) {
    for (; q < end; q++) {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20 || c > 0x7e || c == (unsigned char)forbid) break;
        if (c == 'n' && starts(q, end, TOKEN, TOKEN_LEN)) return NULL;
    }
    return text_line_stop(q, end, body_end);
}

/* The end of a line whose first logger token is at t: its '\n' (or end), with *body_end before the CRs
 * that may end it; NULL unless every byte after the logger is printable and not `forbid` ('"' on a text
 * line, '\\' on a journal one; CRs only at the end) and no second logger follows. One pass.
 * TEXT_LINE_MASKS is the work on one chunk at q: `bad` and `cand` are the masks of its bytes that are not
 * text and of its logger candidates ('n' at i, '_' at i+2). */
#define TEXT_LINE_MASKS(bad, cand, q)                                                                       \
    if (bad) cand &= (uint32_t)((1ull << __builtin_ctz(bad)) - 1);  /* loggers before the first bad byte */  \
    while (cand) {                                                                                          \
        const char *c = q + __builtin_ctz(cand);                                                            \
        if (c[1] == 'f' && c[3] == 'c' && c[4] == 't' && c[5] == '_') return NULL;                          \
        cand &= cand - 1;                                                                                   \
    }                                                                                                       \
    if (bad) return text_line_stop(q + __builtin_ctz(bad), end, body_end);

static const char *text_line_sse2(const char *t, const char *end, const char **body_end, char forbid) {
    const char *q = t + TOKEN_LEN;
#ifdef __SSE2__
    const __m128i lo = _mm_set1_epi8(0x20), hi = _mm_set1_epi8(0x7e), dq = _mm_set1_epi8(forbid);
    const __m128i n = _mm_set1_epi8('n'), u = _mm_set1_epi8('_');
    while (q + 24 <= end) {
        __m128i x = _mm_loadu_si128((const __m128i *)q), y = _mm_loadu_si128((const __m128i *)(q + 2));
        uint32_t bad = (uint32_t)_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(_mm_cmpgt_epi8(x, hi), _mm_cmplt_epi8(x, lo)), _mm_cmpeq_epi8(x, dq)));
        uint32_t cand = (uint32_t)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(x, n), _mm_cmpeq_epi8(y, u)));
        TEXT_LINE_MASKS(bad, cand, q)
        q += 16;
    }
#endif
    return text_line_tail(q, end, body_end, forbid);
}

/* A text line from ls whose logger token is at t and whose body (printable, checked) ends at e. */
static int parse_text_from(const char *ls, const char *t, const char *e, Parsed *out) {
    if (*ls == '{') return 0;
    if ((size_t)(t - ls) > STAMP_MAX) return 0;
    if (t > ls && is_word(t[-1])) return 0;
    if (!printable(ls, (size_t)(t - ls), '"')) {  /* printable, no '"'; tabs too (dmesg -T, some syslogs) */
        for (const char *q = ls; q < t; q++) {
            unsigned char c = (unsigned char)*q;
            if ((c < 0x20 && c != '\t') || c > 0x7e || c == '"') return 0;
        }
    }
    if (!parse_body(t, e, out)) return 0;
    out->stamp = ls; out->stamp_len = (size_t)(t - ls);
    out->mode = MODE_TEXT;
    return 1;
}

/* ---- journal JSON lines in one pass ------------------------------------------------------------ */

#define JSON_QUOTES 192  /* quotes a journal line may hold to be read in one pass (a record has ~15-25 fields) */

/* What one pass over a journal JSON line found: its end, its logger tokens and the offsets of its quotes. */
typedef struct {
    const char *le;   /* the line's '\n', or the end of the buffer */
    const char *tok;  /* its logger token, when it has exactly one */
    int ntok, nq;
    uint32_t q[JSON_QUOTES];
} JsonLine;

/* The quote closing the string whose opening quote is at k - 1, before e: found, or on a line `json_pass`
 * read (j), the entry after the opening one in its table of quotes (*qi: the next unused one; every quote
 * is a delimiter there, in order). NULL if there is none. */
INLINE const char *closing_quote(const char *ls, const char *k, const char *e, const JsonLine *j, int *qi) {
    if (j == NULL) return find_quote(k, e);
    *qi += 2;
    if (*qi > j->nq || ls + j->q[*qi - 2] != k - 1) return NULL;  /* (the opening quote is the entry before) */
    return ls + j->q[*qi - 1];
}

/* A journal JSON line [ls, le) whose only logger token is at t (_SUMMARY_JSON); j: what `json_pass` found on
 * it, or NULL (then its quotes are looked for here). */
static int parse_json(const char *ls, const char *le, const char *t, int check, const JsonLine *j, Parsed *out) {
    const char *e = le;
    if (e > ls && e[-1] == '\r') e--;
    if (check && !printable(ls, (size_t)(e - ls), '\\')) return 0;
    const char *p = ls;
    if (p >= e || *p != '{') return 0;
    p++;
    if (p < e && *p == ' ') p++;
    const char *stamp = NULL; size_t stamp_len = 0;
    int have_msg = 0, qi = 0;
    for (;;) {
        if (p >= e || *p != '"') return 0;
        const char *k = p + 1;
        const char *kq = closing_quote(ls, k, e, j, &qi);
        if (kq == NULL) return 0;
        p = kq + 1;
        if (p < e && *p == ' ') p++;
        if (p >= e || *p != ':') return 0;
        p++;
        if (p < e && *p == ' ') p++;
        if (p >= e || *p != '"') return 0;
        const char *v = p + 1;
        const char *vq = closing_quote(ls, v, e, j, &qi);
        if (vq == NULL) return 0;
        size_t klen = (size_t)(kq - k);
        if (klen == 20 && memcmp(k, "__REALTIME_TIMESTAMP", 20) == 0) {
            if (stamp != NULL || have_msg) return 0;
            size_t n = (size_t)(vq - v);
            if (n < 1 || n > 16) return 0;
            for (const char *q = v; q < vq; q++) if (!is_digit(*q)) return 0;
            stamp = v; stamp_len = n;
        } else if (klen == 7 && memcmp(k, "MESSAGE", 7) == 0) {
            if (stamp == NULL || have_msg) return 0;
            if (v != t) return 0;
            if (!parse_body(t, vq, out)) return 0;
            have_msg = 1;
        }
        p = vq + 1;
        if (p < e && *p == ',') {
            p++;
            if (p < e && *p == ' ') p++;
            continue;
        }
        if (p < e && *p == ' ') p++;
        if (p < e && *p == '}' && p + 1 == e) break;
        return 0;
    }
    if (!have_msg) return 0;
    out->stamp = stamp; out->stamp_len = stamp_len;
    out->mode = MODE_JOURNAL;
    return 1;
}

/* Where json_pass stopped at q (its first byte that is not text, or end): the line's end when that is its '\n'. */
static inline int json_pass_stop(const char *q, const char *end, JsonLine *j) {
    if (q < end && *q != '\n') return 0;
    j->le = q;
    return j->ntok <= 1;
}

/* The rest of json_pass from q, a byte at a time. */
static int json_pass_tail(const char *ls, const char *q, const char *end, JsonLine *j) {
    for (; q < end; q++) {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20 || c > 0x7e || c == '\\') break;
        if (c == '"') {
            if (j->nq == JSON_QUOTES) return 0;
            j->q[j->nq++] = (uint32_t)(q - ls);
        } else if (c == 'n' && starts(q, end, TOKEN, TOKEN_LEN)) {
            if (j->ntok++ == 0) j->tok = q;
        }
    }
    return json_pass_stop(q, end, j);
}

/* One pass over the line from ls (a '{') to its '\n' (or end): 1 when every byte before it is printable
 * ASCII other than '\\' (so every '"' is a delimiter), it holds at most one logger token and its quotes fit
 * the table (a chunk of quotes is taken only while a whole chunk's worth fits: JSON_QUOTES less a chunk's
 * width, at the least); 0 otherwise (the general path reads the line: `text_line`, then `parse_json`
 * looking for the quotes itself).
 * JSON_PASS_MASKS is the work on one chunk of `width` bytes at q: `bad`, `quo` and `cand` are the masks of
 * its bytes that are not text, of its quotes and of its logger candidates ('n' at i, '_' at i+2). */
#define JSON_PASS_MASKS(bad, quo, cand, q, end, width)                                                     \
    if (bad) {  /* only what comes before the first byte that is not text */                                \
        uint32_t before = (uint32_t)((1ull << __builtin_ctz(bad)) - 1);                                     \
        quo &= before; cand &= before;                                                                      \
    }                                                                                                       \
    if (quo) {                                                                                              \
        if (j->nq > JSON_QUOTES - (width)) return 0;  /* (no popcount: not every x86-64 has one) */          \
        uint32_t at = (uint32_t)(q - ls);                                                                   \
        do {                                                                                                \
            j->q[j->nq++] = at + (uint32_t)__builtin_ctz(quo);                                              \
            quo &= quo - 1;                                                                                 \
        } while (quo);                                                                                      \
    }                                                                                                       \
    while (cand) {                                                                                          \
        const char *c = q + __builtin_ctz(cand);                                                            \
        if (c + TOKEN_LEN <= end && c[1] == 'f' && c[3] == 'c' && c[4] == 't' && c[5] == '_') {             \
            if (j->ntok++ == 0) j->tok = c;                                                                 \
        }                                                                                                   \
        cand &= cand - 1;                                                                                   \
    }                                                                                                       \
    if (bad) return json_pass_stop(q + __builtin_ctz(bad), end, j);

static int json_pass_sse2(const char *ls, const char *end, JsonLine *j) {
    const char *q = ls;
    j->ntok = 0; j->nq = 0; j->tok = NULL;
#ifdef __SSE2__
    const __m128i lo = _mm_set1_epi8(0x20), hi = _mm_set1_epi8(0x7e), bs = _mm_set1_epi8('\\');
    const __m128i dq = _mm_set1_epi8('"'), n = _mm_set1_epi8('n'), u = _mm_set1_epi8('_');
    while (q + 18 <= end) {
        __m128i x = _mm_loadu_si128((const __m128i *)q), y = _mm_loadu_si128((const __m128i *)(q + 2));
        uint32_t bad = (uint32_t)_mm_movemask_epi8(
            _mm_or_si128(_mm_or_si128(_mm_cmpgt_epi8(x, hi), _mm_cmplt_epi8(x, lo)), _mm_cmpeq_epi8(x, bs)));
        uint32_t quo = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x, dq));
        uint32_t cand = (uint32_t)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(x, n), _mm_cmpeq_epi8(y, u)));
        JSON_PASS_MASKS(bad, quo, cand, q, end, 16)
        q += 16;
    }
#endif
    return json_pass_tail(ls, q, end, j);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_AVX2 1
/* json_pass_sse2, 32 bytes at a time (chosen at import when the CPU has AVX2) */
__attribute__((target("avx2"))) static int json_pass_avx2(const char *ls, const char *end, JsonLine *j) {
    const char *q = ls;
    j->ntok = 0; j->nq = 0; j->tok = NULL;
    const __m256i lo = _mm256_set1_epi8(0x20), hi = _mm256_set1_epi8(0x7e), bs = _mm256_set1_epi8('\\');
    const __m256i dq = _mm256_set1_epi8('"'), n = _mm256_set1_epi8('n'), u = _mm256_set1_epi8('_');
    while (q + 34 <= end) {
        __m256i x = _mm256_loadu_si256((const __m256i *)q), y = _mm256_loadu_si256((const __m256i *)(q + 2));
        uint32_t bad = (uint32_t)_mm256_movemask_epi8(_mm256_or_si256(
            _mm256_or_si256(_mm256_cmpgt_epi8(x, hi), _mm256_cmpgt_epi8(lo, x)), _mm256_cmpeq_epi8(x, bs)));
        uint32_t quo = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, dq));
        uint32_t cand = (uint32_t)_mm256_movemask_epi8(_mm256_and_si256(_mm256_cmpeq_epi8(x, n),
                                                                         _mm256_cmpeq_epi8(y, u)));
        JSON_PASS_MASKS(bad, quo, cand, q, end, 32)
        q += 32;
    }
    return json_pass_tail(ls, q, end, j);
}
/* text_line_sse2, 32 bytes at a time */
__attribute__((target("avx2"))) static const char *text_line_avx2(const char *t, const char *end,
                                                                  const char **body_end, char forbid) {
    const char *q = t + TOKEN_LEN;
    const __m256i lo = _mm256_set1_epi8(0x20), hi = _mm256_set1_epi8(0x7e), dq = _mm256_set1_epi8(forbid);
    const __m256i n = _mm256_set1_epi8('n'), u = _mm256_set1_epi8('_');
    while (q + 40 <= end) {  /* (a candidate at the chunk's end is read 6 bytes on) */
        __m256i x = _mm256_loadu_si256((const __m256i *)q), y = _mm256_loadu_si256((const __m256i *)(q + 2));
        uint32_t bad = (uint32_t)_mm256_movemask_epi8(_mm256_or_si256(
            _mm256_or_si256(_mm256_cmpgt_epi8(x, hi), _mm256_cmpgt_epi8(lo, x)), _mm256_cmpeq_epi8(x, dq)));
        uint32_t cand = (uint32_t)_mm256_movemask_epi8(_mm256_and_si256(_mm256_cmpeq_epi8(x, n),
                                                                         _mm256_cmpeq_epi8(y, u)));
        TEXT_LINE_MASKS(bad, cand, q)
        q += 32;
    }
    return text_line_tail(q, end, body_end, forbid);
}
#endif

/* The passes in use: the AVX2 ones when the CPU has AVX2, else the SSE2 ones (see `simd`). */
static int (*json_pass)(const char *, const char *, JsonLine *) = json_pass_sse2;
static const char *(*text_line)(const char *, const char *, const char **, char) = text_line_sse2;

/* Whether the "MESSAGE" at m starts _BYTE_ARRAY_MESSAGE (rb'"MESSAGE"\s*:\s*\[') within [m, end). */
static int byte_array_message(const char *m, const char *end) {
    const char *p = m + MSGKEY_LEN;
    while (p < end && is_space(*p)) p++;
    if (p >= end || *p != ':') return 0;
    p++;
    while (p < end && is_space(*p)) p++;
    return p < end && *p == '[';
}

/* Whether a _BYTE_ARRAY_MESSAGE match starts in the line [ls, le) (it may reach into the next lines,
 * up to end). Only lines without a logger need the check: a text line read here holds no '"', and in a
 * journal line read here every "MESSAGE" is followed by ':"', ',' or '}'. */
static int byte_array_line(const char *ls, const char *le, const char *end) {
    const char *q = ls;
    while (q < le && (q = memchr(q, '"', (size_t)(le - q))) != NULL) {
        if (starts(q, end, MSGKEY, MSGKEY_LEN) && byte_array_message(q, end)) return 1;
        q++;
    }
    return 0;
}

static int parse_line(const char *ls, const char *le, const char *t, Parsed *out) {
    if (ls < le && *ls == '{') return parse_json(ls, le, t, 1, NULL, out);
    return parse_text(ls, le, t, out);
}

/* ---- tables ----------------------------------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = PyMem_RawRealloc(*p, n * item);
    if (q == NULL) return -1;
    *p = q; *cap = n;
    return 0;
}

INLINE int same(const char *a, const char *b, size_t n) {
    while (n >= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8); memcpy(&y, b, 8);
        if (x != y) return 0;
        a += 8; b += 8; n -= 8;
    }
    while (n--) if (*a++ != *b++) return 0;
    return 1;
}

INLINE const char *flow_key(const Scanner *s, const Flow *f) {
    return f->sd_len + f->ports_len <= KEY_INLINE ? f->key : s->arena + f->key_off;
}

static int arena_put(Scanner *s, const char *p, size_t n, size_t *off) {
    if (s->arena_len + n > s->arena_cap) {
        size_t c = s->arena_cap ? s->arena_cap : 1 << 16;
        while (c < s->arena_len + n) c *= 2;
        char *q = PyMem_RawRealloc(s->arena, c);
        if (q == NULL) return -1;
        s->arena = q; s->arena_cap = c;
    }
    if (n) memcpy(s->arena + s->arena_len, p, n);
    *off = s->arena_len;
    s->arena_len += n;
    return 0;
}

static int rehash(int32_t **slots, size_t *nslots, size_t want, const void *items, size_t nitems,
                  size_t stride, size_t hash_at) {
    size_t n = *nslots ? *nslots : 1024;
    while (n < want) n *= 2;
    int32_t *ns = PyMem_RawCalloc(n, sizeof(int32_t));
    if (ns == NULL) return -1;
    for (size_t i = 0; i < nitems; i++) {
        uint64_t h;
        memcpy(&h, (const char *)items + i * stride + hash_at, sizeof h);
        size_t j = h & (n - 1);
        while (ns[j]) j = (j + 1) & (n - 1);
        ns[j] = (int32_t)(i + 1);
    }
    PyMem_RawFree(*slots);
    *slots = ns; *nslots = n;
    return 0;
}

static uint64_t key_hash(uint32_t w, uint32_t f) {
    uint64_t h = ((uint64_t)w << 32 | f) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

static void reset(Scanner *s) {
    for (size_t i = 0; i < s->nwordings; i++) {
        PyMem_RawFree(s->wordings[i].text);
        PyMem_RawFree(s->wordings[i].sample);
    }
    s->nwordings = 0;
    if (s->word_slots) memset(s->word_slots, 0, s->word_slots_n * sizeof(int32_t));
    s->nflows = 0;
    if (s->flow_slots) memset(s->flow_slots, 0, s->flow_slots_n * sizeof(int32_t));
    s->nkeys = 0;
    if (s->key_slots) memset(s->key_slots, 0, s->key_slots_n * sizeof(int32_t));
    s->arena_len = 0;
    s->ntouched = 0;
    s->records = 0;
    s->mode = MODE_NONE;
}

/* The wording id of a stripped message, -1 on memory error, -2 when the table is full. */
static long wording_id(Scanner *s, const char *msg, size_t n) {
    char buf[WORDING_MAX + 16];
    size_t k = 0;
    size_t i = 0;
#ifdef __SSE2__
    /* 16 bytes at a time where there is no digit (most of a message) */
    const __m128i below = _mm_set1_epi8('0' - 1), above = _mm_set1_epi8('9' + 1);
    for (; i + 16 <= n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(msg + i));
        if (_mm_movemask_epi8(_mm_and_si128(_mm_cmpgt_epi8(x, below), _mm_cmplt_epi8(x, above))) == 0) {
            _mm_storeu_si128((__m128i *)(buf + k), x);
            k += 16;
            continue;
        }
        /* the runs of non-digits, 16 bytes stored at a time (buf has 16 bytes of slack; the line goes on
         * for more than 16 bytes after any message: its fields follow) */
        unsigned keep = ~(unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpgt_epi8(x, below),
                                                                  _mm_cmplt_epi8(x, above))) & 0xffffu;
        while (keep) {
            unsigned a = (unsigned)__builtin_ctz(keep);
            unsigned run = (unsigned)__builtin_ctz(~(keep >> a));
            _mm_storeu_si128((__m128i *)(buf + k), _mm_loadu_si128((const __m128i *)(msg + i + a)));
            k += run;
            keep &= ~(((1u << run) - 1) << a);
        }
    }
#endif
    for (; i < n; i++) {  /* branch-free: most bytes are kept */
        char c = msg[i];
        buf[k] = c;
        k += !is_digit(c);
    }
    /* a log has a handful of wordings, mostly of different lengths: look at them one by one first */
    if (s->nwordings <= 8) {
        for (size_t i = 0; i < s->nwordings; i++) {
            const Wording *w = &s->wordings[i];
            if (w->len == k && same(w->text, buf, k)) return (long)i;
        }
    }
    uint64_t h = hash_bytes(0xcbf29ce484222325ULL, buf, k);
    if (s->word_slots_n == 0 && rehash(&s->word_slots, &s->word_slots_n, 2 * WORDING_CAP, NULL, 0, 0, 0) < 0)
        return -1;
    size_t mask = s->word_slots_n - 1, j = h & mask;
    while (s->word_slots[j]) {
        Wording *w = &s->wordings[s->word_slots[j] - 1];
        if (w->hash == h && w->len == k && same(w->text, buf, k)) return s->word_slots[j] - 1;
        j = (j + 1) & mask;
    }
    if (s->nwordings >= WORDING_CAP) return -2;
    if (s->wordings == NULL) {
        s->wordings = PyMem_RawCalloc(WORDING_CAP, sizeof(Wording));
        if (s->wordings == NULL) return -1;
    }
    Wording *w = &s->wordings[s->nwordings];
    w->text = PyMem_RawMalloc(k ? k : 1);
    w->sample = PyMem_RawMalloc(n ? n : 1);
    if (w->text == NULL || w->sample == NULL) {
        PyMem_RawFree(w->text); PyMem_RawFree(w->sample);
        w->text = w->sample = NULL;
        return -1;
    }
    memcpy(w->text, buf, k); w->len = k; w->hash = h;
    memcpy(w->sample, msg, n); w->sample_len = n;
    s->word_slots[j] = (int32_t)(++s->nwordings);
    return (long)(s->nwordings - 1);
}

/* Count one record; 0, -1 memory error, -2 a table is full (nothing counted). */
static int commit(Scanner *s, const Parsed *r, long long line) {
    if (s->arena_len > ARENA_CAP) return -2;
    /* the directed flow's slot is fetched while the wording is worked out */
    uint64_t h = hash_bytes(hash_bytes(0x84222325cbf29ce4ULL, r->sd, r->sd_len), r->ports, r->ports_len);
    if (s->flow_slots_n) {
        int32_t at = s->flow_slots[h & (s->flow_slots_n - 1)];
        if (at) __builtin_prefetch(&s->flows[at - 1]);
    }
    long wid = wording_id(s, r->msg, r->msg_len);
    if (wid < 0) return (int)wid;
    if (s->flow_slots_n < 2 * (s->nflows + 1) &&
        rehash(&s->flow_slots, &s->flow_slots_n, 4 * (s->nflows + 1), s->flows, s->nflows, sizeof(Flow),
               offsetof(Flow, hash)) < 0)
        return -1;
    size_t mask = s->flow_slots_n - 1, j = h & mask;
    Flow *f = NULL;
    while (s->flow_slots[j]) {
        Flow *g = &s->flows[s->flow_slots[j] - 1];
        const char *gk = flow_key(s, g);
        if (g->hash == h && g->sd_len == r->sd_len && g->ports_len == r->ports_len &&
            same(gk, r->sd, r->sd_len) && same(gk + r->sd_len, r->ports, r->ports_len)) {
            f = g;
            break;
        }
        j = (j + 1) & mask;
    }
    uint32_t fid;
    if (f == NULL) {
        if (s->nflows >= FLOW_CAP || s->nkeys >= KEY_CAP) return -2;
        if (s->nflows + 1 > s->flows_cap) {  /* 64-byte aligned: a Flow's hot half is one cache line */
            size_t n = s->flows_cap ? 2 * s->flows_cap : 256;
            void *q = NULL;
            if (posix_memalign(&q, 64, n * sizeof(Flow)) != 0) return -1;
            if (s->nflows) memcpy(q, s->flows, s->nflows * sizeof(Flow));
            free(s->flows);
            s->flows = q; s->flows_cap = n;
        }
        f = &s->flows[s->nflows];
        memset(f, 0, sizeof *f);
        f->hash = h;
        size_t off;
        if (r->sd_len + r->ports_len <= KEY_INLINE) {
            memcpy(f->key, r->sd, r->sd_len);
            memcpy(f->key + r->sd_len, r->ports, r->ports_len);
        } else {
            if (arena_put(s, r->sd, r->sd_len, &off) < 0) return -1;
            f->key_off = off;
            if (arena_put(s, r->ports, r->ports_len, &off) < 0) return -1;
        }
        f->sd_len = (uint32_t)r->sd_len; f->ports_len = (uint32_t)r->ports_len;
        if (arena_put(s, r->stamp, r->stamp_len, &off) < 0) return -1;
        f->first_off = off; f->first_len = (uint32_t)r->stamp_len;
        f->first_line = line;
        f->last_cap = 0;
        s->flow_slots[j] = (int32_t)(s->nflows + 1);
        fid = (uint32_t)s->nflows++;
    } else {
        fid = (uint32_t)(f - s->flows);
    }
    /* the key: among the flow's own first few, else in the table */
    f = &s->flows[fid];
    for (uint32_t i = 0; i < f->nk; i++) {
        if (f->kw[i] == (uint32_t)wid) {
            if (++f->kc[i] == 0x80000000u) {
                s->keys[f->kk[i]].count += f->kc[i];
                f->kc[i] = 0;
            }
            goto counted;
        }
    }
    uint64_t kh = key_hash((uint32_t)wid, fid);
    if (s->key_slots_n < 2 * (s->nkeys + 1)) {
        /* keys have no stored hash: rebuild from (wording, flow) */
        size_t n = s->key_slots_n ? s->key_slots_n : 1024;
        while (n < 4 * (s->nkeys + 1)) n *= 2;
        int32_t *ns = PyMem_RawCalloc(n, sizeof(int32_t));
        if (ns == NULL) return -1;
        for (size_t i = 0; i < s->nkeys; i++) {
            size_t q = key_hash(s->keys[i].wording, s->keys[i].flow) & (n - 1);
            while (ns[q]) q = (q + 1) & (n - 1);
            ns[q] = (int32_t)(i + 1);
        }
        PyMem_RawFree(s->key_slots);
        s->key_slots = ns; s->key_slots_n = n;
    }
    mask = s->key_slots_n - 1;
    j = kh & mask;
    Key *k = NULL;
    while (s->key_slots[j]) {
        Key *c = &s->keys[s->key_slots[j] - 1];
        if (c->wording == (uint32_t)wid && c->flow == fid) { k = c; break; }
        j = (j + 1) & mask;
    }
    if (k == NULL) {
        if (s->nkeys >= KEY_CAP) return -2;
        if (grow((void **)&s->keys, &s->keys_cap, s->nkeys + 1, sizeof(Key)) < 0) return -1;
        k = &s->keys[s->nkeys];
        k->wording = (uint32_t)wid; k->flow = fid; k->count = 0;
        s->key_slots[j] = (int32_t)(++s->nkeys);
    }
    f = &s->flows[fid];
    if (f->nk < FLOW_KEYS && k->count == 0) {  /* a new key of the flow: counted in the flow */
        f->kw[f->nk] = (uint32_t)wid;
        f->kc[f->nk] = 1;
        f->kk[f->nk++] = (uint32_t)(k - s->keys);
    } else {
        k->count++;
    }
counted:
    if (f->touched != s->call) {  /* room in the list first: a stamp into the buffer is always listed */
        if (grow((void **)&s->touched, &s->touched_cap, s->ntouched + 1, sizeof(uint32_t)) < 0) return -1;
        f->touched = s->call;
        s->touched[s->ntouched++] = fid;
    }
    f->last_line = line;
    f->pending_stamp = r->stamp; f->pending_len = (uint32_t)r->stamp_len;
    s->mode = r->mode;
    s->records++;
    return 0;
}

/* Count a record of the buffer: 0; ST_FLUSH when Python must take the counts first (a table is full, or
 * journal and text records meet: their stamps do not share a summary); -1 out of memory. */
INLINE int count_record(Scanner *s, const Parsed *r, long long line) {
    if (s->mode != MODE_NONE && r->mode != s->mode) return ST_FLUSH;
    int rc = commit(s, r, line);
    return rc == -1 ? -1 : rc == -2 ? ST_FLUSH : 0;
}

/* The last stamps still pointing into the caller's buffer, copied (at the end of every scan). */
static int own_stamps(Scanner *s) {
    for (size_t i = 0; i < s->ntouched; i++) {
        Flow *f = &s->flows[s->touched[i]];
        if (f->pending_stamp == NULL) continue;
        if (f->pending_len > f->last_cap) {
            size_t cap = f->pending_len < 32 ? 32 : f->pending_len, off;
            if (s->arena_len + cap > s->arena_cap) {
                size_t c = s->arena_cap ? s->arena_cap : 1 << 16;
                while (c < s->arena_len + cap) c *= 2;
                char *q = PyMem_RawRealloc(s->arena, c);
                if (q == NULL) return -1;
                s->arena = q; s->arena_cap = c;
            }
            off = s->arena_len;
            s->arena_len += cap;
            f->last_off = off; f->last_cap = (uint32_t)cap;
        }
        memcpy(s->arena + f->last_off, f->pending_stamp, f->pending_len);
        f->last_len = f->pending_len;
        f->pending_stamp = NULL;
    }
    s->ntouched = 0;
    return 0;
}

/* ---- the scan --------------------------------------------------------------------------------- */

/* The first logger token in [p, end), or NULL; the bytes it looked at are added to s->searched. */
static const char *find_logger(Scanner *s, const char *p, const char *end) {
    if (p >= end || (size_t)(end - p) < TOKEN_LEN) return NULL;
    const char *t = find_token(p, end);
    s->searched += (unsigned long long)((t != NULL ? t : end) - p);
    return t;
}

static PyObject *Scanner_scan(Scanner *s, PyObject *args) {
    Py_buffer view;
    Py_ssize_t start, stop_at, max_line;
    long long first_line;
    if (!PyArg_ParseTuple(args, "y*nnLn", &view, &start, &stop_at, &first_line, &max_line)) return NULL;
    if (start < 0 || stop_at > view.len || start > stop_at || max_line < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan: offsets out of the buffer");
        return NULL;
    }
    if (s->busy) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "scan: this scanner is scanning in another thread");
        return NULL;
    }
    if (max_line > 0x7fffffff) max_line = 0x7fffffff;  /* a longer line is odd (Python's): offsets stay 32-bit */
    s->busy = 1;
    const char *base = view.buf;
    const char *p = base + start, *end = base + stop_at;
    int nomem = 0;
    /* The loop reads only the buffer (held by `view`) and this scanner's C tables (raw allocator):
     * another thread may run Python meanwhile, e.g. a second scanner on another part of a mapped log. */
    long long lines = 0, records_before = s->records;
    int status = ST_DONE;
    const char *tok;
    const char *odd_end = end;
    long long odd_lines = 0;
    Py_BEGIN_ALLOW_THREADS
    s->call++;
    if (s->call == 0) s->call = 1;
    tok = NULL;
    /* tok: the first logger token at or after some p0 <= p (so, while p <= tok, the first at or after p);
     * looked for again only once p has passed it: each byte is searched once (a search per line would be
     * quadratic on a journal where lines read in one pass alternate with lines that are not) */
    int tok_known = 0;
    JsonLine jline, *jl = &jline;
    /* the passes in use, taken once: simd() may switch them meanwhile */
    int (*const pass_json)(const char *, const char *, JsonLine *) = json_pass;
    const char *(*const pass_text)(const char *, const char *, const char **, char) = text_line;
    while (p < end) {
        const char *le, *next;
        int odd = 0;
        if (*p == '{' && pass_json(p, end, jl)) {
            /* a journal line read in one pass: the general path below would read it the same way */
            le = jl->le;
            next = le < end ? le + 1 : end;
            if (jl->ntok == 0) {
                if ((Py_ssize_t)(le - p) > max_line) odd = 1;
                for (int i = 0; i < jl->nq && !odd; i++) {
                    const char *qt = p + jl->q[i];
                    if (starts(qt, end, MSGKEY, MSGKEY_LEN) && byte_array_message(qt, end)) odd = 1;
                }
            } else {
                Parsed r;
                if ((Py_ssize_t)(le - p) > max_line || !parse_json(p, le, jl->tok, 0, jl, &r)) {
                    odd = 1;
                } else {
                    int rc = count_record(s, &r, first_line + lines);
                    if (rc < 0) { nomem = 1; break; }
                    if (rc) { status = rc; break; }
                }
            }
            if (!odd) {
                lines++;
                p = next;
                continue;
            }
            if (!tok_known || (tok != NULL && tok < p)) tok = find_logger(s, p, end);
            tok_known = 1;
            goto odd_region;
        }
        if (!tok_known || (tok != NULL && tok < p)) {
            tok = find_logger(s, p, end);
            tok_known = 1;
        }
        if (tok != NULL && (tok == p || memchr(p, '\n', (size_t)(tok - p)) == NULL)) {
            /* a line with a logger: read it (a text line in one pass from the logger on) */
            Parsed r;
            int ok;
            const char *body_end;
            if (*p == '{') {
                le = pass_text(tok, end, &body_end, '\\');
                if (le == NULL) {
                    const char *nl = memchr(tok, '\n', (size_t)(end - tok));
                    le = nl ? nl : end;
                    ok = 0;
                } else {
                    ok = (Py_ssize_t)(le - p) <= max_line && printable(p, (size_t)(tok - p), '\\') &&
                         parse_json(p, le, tok, 0, NULL, &r);
                }
            } else {
                le = pass_text(tok, end, &body_end, '"');
                if (le == NULL) {
                    const char *nl = memchr(tok, '\n', (size_t)(end - tok));
                    le = nl ? nl : end;
                    ok = 0;
                } else {
                    ok = (Py_ssize_t)(le - p) <= max_line && parse_text_from(p, tok, body_end, &r);
                }
            }
            next = le < end ? le + 1 : end;
            if (!ok) {
                odd = 1;
            } else {
                int rc = count_record(s, &r, first_line + lines);
                if (rc < 0) { nomem = 1; break; }
                if (rc) { status = rc; break; }
                tok = find_logger(s, next, end);
            }
        } else {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            le = nl ? nl : end;
            next = nl ? nl + 1 : end;
            if ((Py_ssize_t)(le - p) > max_line || byte_array_line(p, le, end)) odd = 1;
        }
        if (odd) {
        odd_region:
            status = ST_ODD;
            /* the odd region: up to the next line read here (a conntrack line: never a continuation) */
            const char *q = p;
            const char *t = tok;
            odd_end = end;
            while (q < end) {
                const char *qnl = memchr(q, '\n', (size_t)(end - q));
                const char *qe = qnl ? qnl : end;
                const char *qn = qnl ? qnl + 1 : end;
                while (t != NULL && t < q) t = find_logger(s, t + TOKEN_LEN, end);
                if (q != p && t != NULL && t < qe && (Py_ssize_t)(qe - q) <= max_line) {
                    const char *nt = find_logger(s, t + TOKEN_LEN, end);
                    Parsed r;
                    if ((nt == NULL || nt >= qe) && parse_line(q, qe, t, &r)) {
                        odd_end = q;
                        break;
                    }
                }
                odd_lines++;
                q = qn;
            }
            break;
        }
        lines++;
        p = next;
    }
    if (!nomem && own_stamps(s) < 0) nomem = 1;
    if (nomem) {  /* no stamp may point into the buffer once it is released: those flows' last stamps are lost */
        for (size_t i = 0; i < s->ntouched; i++) s->flows[s->touched[i]].pending_stamp = NULL;
        s->ntouched = 0;
    }
    Py_END_ALLOW_THREADS
    s->busy = 0;
    PyBuffer_Release(&view);
    if (nomem) return PyErr_NoMemory();
    return Py_BuildValue("inLLnL", status, (Py_ssize_t)(p - base), lines, s->records - records_before,
                         (Py_ssize_t)(odd_end - base), odd_lines);
}

/* (line, stamp bytes) */
static PyObject *line_stamp(long long line, const char *arena, size_t off, uint32_t len) {
    return Py_BuildValue("(Ly#)", line, len ? arena + off : "", (Py_ssize_t)len);
}

/* (journal, counts, first, last, samples) of the records counted since the last flush, in the shape of
 * a BlockSummary with absolute line numbers (first_line 0); None when there are none. Clears. */
static PyObject *Scanner_flush(Scanner *s, PyObject *unused) {
    if (s->busy) {
        PyErr_SetString(PyExc_RuntimeError, "flush: this scanner is scanning in another thread");
        return NULL;
    }
    if (s->records == 0) {
        reset(s);
        Py_RETURN_NONE;
    }
    PyObject *counts = PyDict_New(), *first = PyDict_New(), *last = PyDict_New(), *samples = PyDict_New();
    PyObject *words = PyList_New((Py_ssize_t)s->nwordings);
    PyObject *flows = PyList_New((Py_ssize_t)s->nflows);  /* (sd, ports) tuples */
    PyObject *result = NULL;
    if (!counts || !first || !last || !samples || !words || !flows) goto done;
    for (size_t i = 0; i < s->nwordings; i++) {
        Wording *w = &s->wordings[i];
        PyObject *text = PyBytes_FromStringAndSize(w->text, (Py_ssize_t)w->len);
        if (text == NULL) goto done;
        PyList_SET_ITEM(words, (Py_ssize_t)i, text);
    }
    for (size_t i = 0; i < s->nflows; i++) {
        Flow *f = &s->flows[i];
        const char *fk = flow_key(s, f);
        PyObject *key = Py_BuildValue("(y#y#)", fk, (Py_ssize_t)f->sd_len, fk + f->sd_len,
                                      (Py_ssize_t)f->ports_len);  /* both non-empty (\S+, \d+) */
        if (key == NULL) goto done;
        PyList_SET_ITEM(flows, (Py_ssize_t)i, key);
        PyObject *a = line_stamp(f->first_line, s->arena, f->first_off, f->first_len);
        PyObject *b = line_stamp(f->last_line, s->arena, f->last_off, f->last_len);
        int bad = a == NULL || b == NULL || PyDict_SetItem(first, key, a) < 0 || PyDict_SetItem(last, key, b) < 0;
        Py_XDECREF(a); Py_XDECREF(b);
        if (bad) goto done;
    }
    for (size_t i = 0; i < s->nflows; i++) {
        Flow *f = &s->flows[i];
        for (uint32_t j = 0; j < f->nk; j++) {
            s->keys[f->kk[j]].count += f->kc[j];
            f->kc[j] = 0;
        }
    }
    for (size_t i = 0; i < s->nkeys; i++) {
        Key *k = &s->keys[i];
        PyObject *flow = PyList_GET_ITEM(flows, k->flow);
        PyObject *key = PyTuple_Pack(3, PyList_GET_ITEM(words, k->wording), PyTuple_GET_ITEM(flow, 0),
                                     PyTuple_GET_ITEM(flow, 1));
        PyObject *n = PyLong_FromLongLong(k->count);
        int bad = key == NULL || n == NULL || PyDict_SetItem(counts, key, n) < 0;
        Py_XDECREF(key); Py_XDECREF(n);
        if (bad) goto done;
    }
    for (size_t i = 0; i < s->nwordings; i++) {
        Wording *w = &s->wordings[i];
        PyObject *sample = PyBytes_FromStringAndSize(w->sample, (Py_ssize_t)w->sample_len);
        int bad = sample == NULL || PyDict_SetItem(samples, PyList_GET_ITEM(words, (Py_ssize_t)i), sample) < 0;
        Py_XDECREF(sample);
        if (bad) goto done;
    }
    result = Py_BuildValue("(OOOOO)", s->mode == MODE_JOURNAL ? Py_True : Py_False, counts, first, last, samples);
done:
    Py_XDECREF(counts); Py_XDECREF(first); Py_XDECREF(last); Py_XDECREF(samples);
    Py_XDECREF(words); Py_XDECREF(flows);
    reset(s);
    return result;
}

static PyObject *Scanner_searched(Scanner *s, void *closure) {
    (void)closure;
    return PyLong_FromUnsignedLongLong(s->searched);
}

static PyObject *Scanner_pending(Scanner *s, void *closure) {
    if (s->busy) {
        PyErr_SetString(PyExc_RuntimeError, "pending: this scanner is scanning in another thread");
        return NULL;
    }
    return PyLong_FromLongLong(s->records);
}

static void Scanner_dealloc(Scanner *s) {
    reset(s);
    PyMem_RawFree(s->arena); free(s->flows); PyMem_RawFree(s->flow_slots); PyMem_RawFree(s->keys);
    PyMem_RawFree(s->key_slots); PyMem_RawFree(s->wordings); PyMem_RawFree(s->word_slots); PyMem_RawFree(s->touched);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)Scanner_scan, METH_VARARGS,
     "scan(buffer, start, end, first_line, max_line) -> (status, stop, lines, records, odd_end, odd_lines)\n\n"
     "Count the conntrack lines of buffer[start:end] (whole lines; first_line is the number of the first)\n"
     "until the first line not certainly read here. status 0: all of it; 1: buffer[stop:odd_end] (odd_lines\n"
     "lines) is for Python to read, then scan on from odd_end; 2: flush() first, then scan on from stop.\n"
     "lines/records: lines and records of buffer[start:stop], counted here."},
    {"flush", (PyCFunction)Scanner_flush, METH_NOARGS,
     "flush() -> None or (journal, counts, first, last, samples): the BlockSummary fields of the records\n"
     "counted since the last flush (absolute line numbers), which are then forgotten."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scanner_getset[] = {
    {"pending", (getter)Scanner_pending, NULL, "records counted and not flushed yet", NULL},
    {"searched", (getter)Scanner_searched, NULL, "bytes the search for loggers has looked at, all scans together", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysctl_doctor.conntrack._logscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Counts conntrack log lines per (wording, directed flow) across calls (see scan, flush).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

static int avx2_usable(void) {
#ifdef HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* simd([name]) -> the name of the line passes in use ("avx2" or "sse2"); with a name, use that one
 * from now on (the tests run both); ValueError when this CPU or build has no such pass. */
static PyObject *logscan_simd(PyObject *module, PyObject *args) {
    const char *name = NULL;
    (void)module;
    if (!PyArg_ParseTuple(args, "|s", &name)) return NULL;
    if (name != NULL) {
        if (strcmp(name, "sse2") == 0) {
            json_pass = json_pass_sse2;
            text_line = text_line_sse2;
#ifdef HAVE_AVX2
        } else if (strcmp(name, "avx2") == 0 && avx2_usable()) {
            json_pass = json_pass_avx2;
            text_line = text_line_avx2;
#endif
        } else {
            PyErr_Format(PyExc_ValueError, "simd: no %s pass on this CPU or build", name);
            return NULL;
        }
    }
#ifdef HAVE_AVX2
    if (json_pass == json_pass_avx2) return PyUnicode_FromString("avx2");
#endif
    return PyUnicode_FromString("sse2");
}

static PyMethodDef logscan_functions[] = {
    {"simd", logscan_simd, METH_VARARGS,
     "simd([name]) -> the line passes in use ('avx2' or 'sse2'; without SSE2 the 'sse2' passes read a\n"
     "byte at a time); with a name, use those passes from now on (ValueError when there are none)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef logscan_module = {
    PyModuleDef_HEAD_INIT, "_logscan",
    "C twin of the conntrack kernel-log summary path (sysctl_doctor.conntrack.kernel_log).", -1, logscan_functions,
};

PyMODINIT_FUNC PyInit__logscan(void) {
    if (PyType_Ready(&ScannerType) < 0) return NULL;
#ifdef HAVE_AVX2
    if (avx2_usable()) {
        json_pass = json_pass_avx2;
        text_line = text_line_avx2;
    }
#endif
    PyObject *m = PyModule_Create(&logscan_module);
    if (m == NULL) return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
