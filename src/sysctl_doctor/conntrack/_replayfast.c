/* The compiled twin of replay's common case (issue #12): an optional accelerator.
 *
 * FastTable holds the conntrack entries the Python replay handed over ("adopted"): assured
 * ESTABLISHED entries, each with its window state (both ip_ct_tcp_state halves, the last_* fields,
 * retrans, expires). run() reads classic-pcap records from a buffer and, for each record that is
 *   - an IPv4 (20-byte header) or IPv6 (no extension header) TCP packet, whole to the end of its
 *     options, of a link type without direction flags (Ethernet with VLAN tags, raw IP, BSD loopback),
 *   - with flags ACK (PSH, URG, ECE, CWR allowed; no SYN, FIN, RST), its options whole in the capture
 *     (they count only through the SACK edge, tcp_sack(), when the receiver allowed SACK),
 *   - with a checksum that is not bad (when checksums are judged), on a key of an adopted entry that
 *     has not expired, and in window by the four tests of tcp_in_window() (TcpTracker._established_ack(),
 *     with the SACK edge where TcpTracker.in_window() uses it),
 * applies exactly the state update of TcpTracker.packet() for it and counts an ACCEPT. At the
 * first record it is not certain about (or an incomplete record, or the frame limit) it stops and
 * returns: the Python replay judges that record with the full model, after evict() handed the
 * entry's state back. Every other case (handshake, FIN, RST, out of window — liberal or not —, an entry
 * not assured or expired, IP options, IPv6 extension headers, cut records) is the Python model's;
 * retransmissions are done here (they change only the timeout, chosen as in Python). Frames without
 * TCP that pcap.decode() calls "not IP" / "not TCP" are counted. Nothing here allocates more than the
 * records in the buffer it was given need (output) and the adopted entries (table).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MASK32 0xFFFFFFFFu
#define MAX_RECORD (1u << 18)
#define F_SACK_PERM 0x02u
#define F_DATA_UNACK 0x10u
#define F_MAXACK_SET 0x20u
#define ACK_SET 3u
#define MAXACKWINCONST 66000u
#define MAX_KEYS 4

typedef struct {
    uint8_t alen;
    uint8_t src[16];
    uint8_t dst[16];
    uint8_t pad;
    uint16_t sport, dport;
} Key;

typedef struct {
    Key key;
    int32_t ent;   /* index into entries */
    uint8_t dir;
    uint8_t used;  /* 0 empty, 1 used, 2 deleted */
} Slot;

typedef struct {
    PyObject *obj; /* the Python _Entry; NULL: free */
    uint32_t td_end[2], td_maxend[2], td_maxwin[2], td_maxack[2], td_scale[2], flags[2];
    uint32_t last_dir, last_seq, last_ack, last_end, last_win, last_index;
    unsigned long long retrans;
    double expires;
    unsigned long long packets, last_frame;
    uint32_t flow;
    int nkeys;
    Key keys[MAX_KEYS];
} Entry;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t cap, used, deleted;  /* slots */
    Entry *entries;
    size_t ecap, elen, owned;
    int32_t free_head;  /* free entries chained through flow (as an index); -1 none */
    /* settings */
    long long est, est_unack, est_retrans;  /* -1: not applicable */
    unsigned long long max_retrans;
    int checksums;
    unsigned int linktype;
    int big_endian;
    double scale;
} FastTable;

/* ---------------------------------------------------------------- hashing */

static inline uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static uint64_t key_hash(const Key *k) {
    uint64_t h = 0x1234567u + k->alen;
    for (int i = 0; i < k->alen; i += 4) {
        uint32_t a, b;
        memcpy(&a, k->src + i, 4);
        memcpy(&b, k->dst + i, 4);
        h = mix(h, ((uint64_t)a << 32) | b);
    }
    h = mix(h, ((uint64_t)k->sport << 16) | k->dport);
    return h;
}

static inline int key_eq(const Key *a, const Key *b) {
    return memcmp(a, b, sizeof(Key)) == 0;
}

/* the slot holding `k`, or -1 */
static Py_ssize_t find_slot(FastTable *t, const Key *k) {
    if (!t->cap)
        return -1;
    size_t mask = t->cap - 1;
    size_t i = (size_t)key_hash(k) & mask;
    for (;;) {
        Slot *s = &t->slots[i];
        if (s->used == 0)
            return -1;
        if (s->used == 1 && key_eq(&s->key, k))
            return (Py_ssize_t)i;
        i = (i + 1) & mask;
    }
}

static int rehash(FastTable *t, size_t newcap) {
    Slot *old = t->slots;
    size_t oldcap = t->cap;
    Slot *slots = (Slot *)PyMem_Calloc(newcap, sizeof(Slot));
    if (!slots) {
        PyErr_NoMemory();
        return -1;
    }
    t->slots = slots;
    t->cap = newcap;
    t->deleted = 0;
    size_t mask = newcap - 1;
    for (size_t j = 0; j < oldcap; j++) {
        if (old[j].used != 1)
            continue;
        size_t i = (size_t)key_hash(&old[j].key) & mask;
        while (slots[i].used)
            i = (i + 1) & mask;
        slots[i] = old[j];
    }
    PyMem_Free(old);
    return 0;
}

static int insert_slot(FastTable *t, const Key *k, int32_t ent, uint8_t dir) {
    if ((t->used + t->deleted + 1) * 2 > t->cap) {
        size_t newcap = t->cap ? t->cap : 64;
        while ((t->used + 1) * 4 > newcap)
            newcap *= 2;
        if (rehash(t, newcap) < 0)
            return -1;
    }
    size_t mask = t->cap - 1;
    size_t i = (size_t)key_hash(k) & mask;
    while (t->slots[i].used == 1)
        i = (i + 1) & mask;
    if (t->slots[i].used == 2)
        t->deleted--;
    t->slots[i].key = *k;
    t->slots[i].ent = ent;
    t->slots[i].dir = dir;
    t->slots[i].used = 1;
    t->used++;
    return 0;
}

static void delete_key(FastTable *t, const Key *k) {
    Py_ssize_t i = find_slot(t, k);
    if (i >= 0) {
        t->slots[i].used = 2;
        t->used--;
        t->deleted++;
    }
}

/* ---------------------------------------------------------------- conversions */

static int key_from(Key *k, PyObject *src, PyObject *dst, PyObject *sport, PyObject *dport) {
    memset(k, 0, sizeof(Key));
    if (!PyBytes_Check(src) || !PyBytes_Check(dst))
        return 0;
    Py_ssize_t ls = PyBytes_GET_SIZE(src), ld = PyBytes_GET_SIZE(dst);
    if (ls != ld || (ls != 4 && ls != 16))
        return 0;
    if (!PyLong_Check(sport) || !PyLong_Check(dport))
        return 0;
    long sp = PyLong_AsLong(sport), dp = PyLong_AsLong(dport);
    if ((sp == -1 || dp == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (sp < 0 || sp > 0xFFFF || dp < 0 || dp > 0xFFFF)
        return 0;
    k->alen = (uint8_t)ls;
    memcpy(k->src, PyBytes_AS_STRING(src), (size_t)ls);
    memcpy(k->dst, PyBytes_AS_STRING(dst), (size_t)ls);
    k->sport = (uint16_t)sp;
    k->dport = (uint16_t)dp;
    return 1;
}

/* an int in [0, limit], or -1 (error cleared) */
static int get_uint(PyObject *o, unsigned long long limit, unsigned long long *out) {
    if (!PyLong_CheckExact(o))
        return -1;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    if (v > limit)
        return -1;
    *out = v;
    return 0;
}

#define STATE_LEN 20

static PyObject *evicted(FastTable *t, int32_t idx) {
    Entry *e = &t->entries[idx];
    for (int j = 0; j < e->nkeys; j++)
        delete_key(t, &e->keys[j]);
    PyObject *state = Py_BuildValue(
        "(kkkkkkkkkkkkkkkkkKkd)",
        (unsigned long)e->td_end[0], (unsigned long)e->td_maxend[0], (unsigned long)e->td_maxwin[0],
        (unsigned long)e->td_maxack[0], (unsigned long)e->td_scale[0], (unsigned long)e->flags[0],
        (unsigned long)e->td_end[1], (unsigned long)e->td_maxend[1], (unsigned long)e->td_maxwin[1],
        (unsigned long)e->td_maxack[1], (unsigned long)e->td_scale[1], (unsigned long)e->flags[1],
        (unsigned long)e->last_dir, (unsigned long)e->last_seq, (unsigned long)e->last_ack,
        (unsigned long)e->last_end, (unsigned long)e->last_win, e->retrans,
        (unsigned long)e->last_index, e->expires);
    PyObject *out = NULL;
    if (state)
        out = Py_BuildValue("(ONKK)", e->obj, state, e->packets, e->last_frame);
    Py_CLEAR(e->obj);
    e->nkeys = 0;
    e->flow = (uint32_t)t->free_head;
    t->free_head = idx;
    t->owned--;
    return out;
}

/* ---------------------------------------------------------------- the type */

static void FastTable_dealloc(FastTable *t) {
    for (size_t i = 0; i < t->elen; i++)
        Py_CLEAR(t->entries[i].obj);
    PyMem_Free(t->entries);
    PyMem_Free(t->slots);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* A table is usable only once initialised; a fresh one has no free entry (free_head -1, not 0). */
static PyObject *FastTable_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    FastTable *t = (FastTable *)PyType_GenericNew(type, args, kwds);
    if (t != NULL)
        t->free_head = -1;
    return (PyObject *)t;
}

static int FastTable_init(FastTable *t, PyObject *args, PyObject *kwds) {
    if (t->elen > 0) {  /* settings changed under adopted entries, the free list lost: refused */
        PyErr_SetString(PyExc_RuntimeError, "FastTable: already holds entries");
        return -1;
    }
    static char *kw[] = {"established", "unacknowledged", "max_retrans_timeout", "max_retrans",
                         "checksums", "linktype", "big_endian", "scale", NULL};
    long long est, unack, retr;
    unsigned long long maxr;
    int checks, big;
    unsigned int lt;
    double scale;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLLKpIpd", kw, &est, &unack, &retr, &maxr, &checks, &lt,
                                     &big, &scale))
        return -1;
    t->est = est;
    t->est_unack = unack;
    t->est_retrans = retr;
    t->max_retrans = maxr;
    t->checksums = checks;
    t->linktype = lt;
    t->big_endian = big;
    t->scale = scale;
    t->free_head = -1;
    return 0;
}

/* adopt(entry, keys, state, flow) -> bool: keys = [((src, dst, sport, dport), direction), ...] */
static PyObject *FastTable_adopt(FastTable *t, PyObject *args) {
    PyObject *obj, *keys, *state;
    unsigned long flow;
    if (!PyArg_ParseTuple(args, "OO!O!k", &obj, &PyList_Type, &keys, &PyTuple_Type, &state, &flow))
        return NULL;
    Py_ssize_t nk = PyList_GET_SIZE(keys);
    if (nk < 1 || nk > MAX_KEYS || PyTuple_GET_SIZE(state) != STATE_LEN || flow > MASK32)
        Py_RETURN_FALSE;
    Entry e;
    memset(&e, 0, sizeof(e));
    uint8_t dirs[MAX_KEYS];
    for (Py_ssize_t j = 0; j < nk; j++) {
        PyObject *pair = PyList_GET_ITEM(keys, j);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2)
            Py_RETURN_FALSE;
        PyObject *k = PyTuple_GET_ITEM(pair, 0), *d = PyTuple_GET_ITEM(pair, 1);
        unsigned long long dv;
        if (!PyTuple_Check(k) || PyTuple_GET_SIZE(k) != 4 || get_uint(d, 1, &dv) < 0)
            Py_RETURN_FALSE;
        if (!key_from(&e.keys[j], PyTuple_GET_ITEM(k, 0), PyTuple_GET_ITEM(k, 1), PyTuple_GET_ITEM(k, 2),
                      PyTuple_GET_ITEM(k, 3)))
            Py_RETURN_FALSE;
        if (find_slot(t, &e.keys[j]) >= 0)
            Py_RETURN_FALSE;
        for (Py_ssize_t i = 0; i < j; i++)
            if (key_eq(&e.keys[i], &e.keys[j]))
                Py_RETURN_FALSE;
        dirs[j] = (uint8_t)dv;
    }
    e.nkeys = (int)nk;
    unsigned long long v[STATE_LEN - 1];
    for (int i = 0; i < STATE_LEN - 1; i++) {
        unsigned long long limit = MASK32;
        if (i == 4 || i == 10)
            limit = 14;  /* td_scale: parse_options() caps it at TCP_MAX_WSCALE */
        else if (i == 12)
            limit = 1;   /* last_dir */
        else if (i == 17)
            limit = 0xFFFFFFFFFFFFull;  /* retrans */
        if (get_uint(PyTuple_GET_ITEM(state, i), limit, &v[i]) < 0)
            Py_RETURN_FALSE;
    }
    PyObject *exp = PyTuple_GET_ITEM(state, STATE_LEN - 1);
    if (!PyFloat_CheckExact(exp))
        Py_RETURN_FALSE;
    for (int d = 0; d < 2; d++) {
        e.td_end[d] = (uint32_t)v[6 * d];
        e.td_maxend[d] = (uint32_t)v[6 * d + 1];
        e.td_maxwin[d] = (uint32_t)v[6 * d + 2];
        e.td_maxack[d] = (uint32_t)v[6 * d + 3];
        e.td_scale[d] = (uint32_t)v[6 * d + 4];
        e.flags[d] = (uint32_t)v[6 * d + 5];
    }
    e.last_dir = (uint32_t)v[12];
    e.last_seq = (uint32_t)v[13];
    e.last_ack = (uint32_t)v[14];
    e.last_end = (uint32_t)v[15];
    e.last_win = (uint32_t)v[16];
    e.retrans = v[17];
    e.last_index = (uint32_t)v[18];
    e.expires = PyFloat_AS_DOUBLE(exp);
    e.flow = (uint32_t)flow;
    int32_t idx;
    if (t->free_head >= 0) {
        idx = t->free_head;
        t->free_head = (int32_t)t->entries[idx].flow;
    } else {
        if (t->elen == t->ecap) {
            size_t ncap = t->ecap ? t->ecap * 2 : 64;
            if (ncap > 0x7FFFFFFF) {
                PyErr_NoMemory();
                return NULL;
            }
            Entry *ne = (Entry *)PyMem_Realloc(t->entries, ncap * sizeof(Entry));
            if (!ne)
                return PyErr_NoMemory();
            t->entries = ne;
            t->ecap = ncap;
        }
        idx = (int32_t)t->elen++;
    }
    for (int j = 0; j < e.nkeys; j++) {
        if (insert_slot(t, &e.keys[j], idx, dirs[j]) < 0) {
            for (int i = 0; i < j; i++)
                delete_key(t, &e.keys[i]);
            t->entries[idx].obj = NULL;
            t->entries[idx].flow = (uint32_t)t->free_head;
            t->free_head = idx;
            return NULL;
        }
    }
    Py_INCREF(obj);
    e.obj = obj;
    t->entries[idx] = e;
    t->owned++;
    Py_RETURN_TRUE;
}

/* evict(src, dst, sport, dport) -> None or (entry, state, packets, last_frame) */
static PyObject *FastTable_evict(FastTable *t, PyObject *args) {
    PyObject *src, *dst, *sp, *dp;
    if (!PyArg_ParseTuple(args, "OOOO", &src, &dst, &sp, &dp))
        return NULL;
    Key k;
    if (!t->owned || !key_from(&k, src, dst, sp, dp))
        Py_RETURN_NONE;
    Py_ssize_t i = find_slot(t, &k);
    if (i < 0)
        Py_RETURN_NONE;
    return evicted(t, t->slots[i].ent);
}

/* evict_expired(now) -> [(entry, state, packets, last_frame), ...] for expires < now; drain() all */
static PyObject *evict_where(FastTable *t, int all, double now) {
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    for (size_t i = 0; i < t->elen; i++) {
        Entry *e = &t->entries[i];
        if (!e->obj || !(all || e->expires < now))
            continue;
        PyObject *item = evicted(t, (int32_t)i);
        if (!item || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

static PyObject *FastTable_evict_expired(FastTable *t, PyObject *args) {
    double now;
    if (!PyArg_ParseTuple(args, "d", &now))
        return NULL;
    return evict_where(t, 0, now);
}

static PyObject *FastTable_drain(FastTable *t, PyObject *noargs) {
    return evict_where(t, 1, 0.0);
}

static Py_ssize_t FastTable_len(FastTable *t) {
    return (Py_ssize_t)t->owned;
}

/* ---------------------------------------------------------------- output buffers */

typedef struct {
    char *p;
    size_t len, cap;
} Out;

static int out_reserve(Out *o, size_t n) {
    if (o->len + n <= o->cap)
        return 0;
    size_t ncap = o->cap ? o->cap * 2 : 65536;
    while (ncap < o->len + n)
        ncap *= 2;
    char *np = (char *)PyMem_Realloc(o->p, ncap);
    if (!np) {
        PyErr_NoMemory();
        return -1;
    }
    o->p = np;
    o->cap = ncap;
    return 0;
}

static size_t put_uint(char *p, unsigned long long v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static const char J1[] = ",\n  {\"frame\": ";
static const char J2[] = ", \"verdict\": \"accept\", \"message\": null, \"flow\": ";

/* ---------------------------------------------------------------- the pass */

static inline uint32_t rd32(const uint8_t *p, int big) {
    if (big)
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint32_t be16(const uint8_t *p) {
    return ((uint32_t)p[0] << 8) | p[1];
}

/* sum of big-endian 16-bit words, the last odd byte padded with zero */
static uint64_t word_sum(const uint8_t *p, size_t n) {
    uint64_t s = 0;
    size_t i = 0;
    for (; i + 1 < n; i += 2)
        s += ((uint32_t)p[i] << 8) | p[i + 1];
    if (i < n)
        s += (uint32_t)p[i] << 8;
    return s;
}

/* tcp_model.highest_sack(): the highest right edge of the first SACK option, if after `sack`
 * (the walk of tcp_sack(), including its treatment of odd lengths) */
static uint32_t highest_sack(const uint8_t *opt, size_t n, uint32_t sack) {
    if (n == 12 && opt[0] == 1 && opt[1] == 1 && opt[2] == 8 && opt[3] == 10)
        return sack;
    size_t i = 0;
    long length = (long)n;
    while (length > 0) {
        uint32_t opcode = opt[i++];
        if (opcode == 0)
            return sack;
        if (opcode == 1) {
            length -= 1;
            continue;
        }
        if (length < 2)
            return sack;
        long opsize = opt[i++];
        if (opsize < 2 || opsize > length)
            return sack;
        if (opcode == 5 && opsize >= 10 && (opsize - 2) % 8 == 0) {
            for (long j = 0; j < opsize - 2; j += 8) {
                uint32_t edge = be32(opt + i + j + 4);
                if ((uint32_t)(sack - edge) > 0x7FFFFFFFu)  /* after(edge, sack) */
                    sack = edge;
            }
            return sack;
        }
        i += (size_t)(opsize - 2);
        length -= opsize;
    }
    return sack;
}

/* One captured frame of link type `lt`, time `ts`, judged like Replay._one() would judge it on the
 * fast path: ACCEPTED (the entry's state updated; *ent and *dir say which), NOT_IP or NOT_TCP (what
 * pcap.decode() says of a frame without TCP, when it says it without a doubt), or DEFER when the Python
 * side must read it (nothing changed). */
enum { DEFER = 0, ACCEPTED = 1, NOT_IP = 2, NOT_TCP = 3 };

static int judge(FastTable *t, const uint8_t *d, size_t len, unsigned int lt, double ts, Entry **ent,
                 uint32_t *direction) {
    size_t off;
    uint32_t etype;
    /* the link layer, as pcap.decode() reads it */
    if (lt == 1) {
        if (len < 14)
            return DEFER;
        etype = be16(d + 12);
        off = 14;
        while (etype == 0x8100 || etype == 0x88A8 || etype == 0x9100) {
            if (len < off + 4)
                return DEFER;
            etype = be16(d + off + 2);
            off += 4;
        }
    } else if (lt == 101 || lt == 12 || lt == 14 || lt == 228 || lt == 229) {
        if (!len)
            return DEFER;
        etype = (d[0] >> 4) == 4 ? 0x0800 : (d[0] >> 4) == 6 ? 0x86DD : 0;
        off = 0;
    } else if (lt == 0) {
        if (len < 4)
            return DEFER;
        uint32_t fam = (uint32_t)d[0] | ((uint32_t)d[1] << 8) | ((uint32_t)d[2] << 16) | ((uint32_t)d[3] << 24);
        if (fam > 0xFFFF)
            fam = be32(d);
        etype = fam == 2 ? 0x0800 : (fam == 10 || fam == 24 || fam == 28 || fam == 30) ? 0x86DD : 0;
        off = 4;
    } else {
        return DEFER;
    }
    size_t l4, alen;
    uint32_t l4len;
    const uint8_t *src, *dst;
    if (etype == 0x0800) {
        if (len >= off + 20 && (d[off] >> 4) == 4 && d[off + 9] != 6) {
            uint32_t ihl = (uint32_t)(d[off] & 0x0F) * 4;
            if (ihl >= 20 && be16(d + off + 2) >= ihl)
                return NOT_TCP;
            return DEFER;
        }
        /* decode()'s one-unpack case: a 20-byte IPv4 header */
        if (len < off + 40 || d[off] != 0x45)
            return DEFER;
        uint32_t total = be16(d + off + 2), frag = be16(d + off + 6);
        if (d[off + 9] != 6 || (frag & 0x3FFF) || total < 40)
            return DEFER;
        l4 = off + 20;
        l4len = total - 20;
        src = d + off + 12;
        dst = d + off + 16;
        alen = 4;
    } else if (etype == 0x86DD) {
        if (len < off + 40 || (d[off] >> 4) != 6)
            return DEFER;
        uint32_t nxt = d[off + 6];
        if (nxt != 6) {  /* no extension header (those decode() walks) and not TCP */
            if (nxt != 0 && nxt != 43 && nxt != 60 && nxt != 51 && nxt != 44)
                return NOT_TCP;
            return DEFER;
        }
        l4 = off + 40;
        l4len = be16(d + off + 4);
        src = d + off + 8;
        dst = d + off + 24;
        alen = 16;
        if (l4len < 20 || len < l4 + 20)
            return DEFER;
    } else {
        return NOT_IP;
    }
    const uint8_t *tcp = d + l4;
    uint32_t doff = (uint32_t)(tcp[12] >> 4) * 4, flags = tcp[13];
    if ((flags & 0x17) != 0x10)
        return DEFER;  /* not a plain ACK: the state table's business */
    /* decode(): options whole in the capture (else "cut": Python's), and tcp_error()'s length test */
    if (doff < 20 || doff > l4len || len < l4 + doff)
        return DEFER;
    if (t->checksums && len >= l4 + l4len) {
        /* checksum.tcp_checksum_bad(): the residues modulo 0xFFFF */
        uint64_t base = word_sum(src, alen) + word_sum(dst, alen);
        base = base % 0xFFFF + 6;
        uint64_t total = word_sum(tcp, l4len) + base + l4len;
        if (total % 0xFFFF != 0 && (uint64_t)be16(tcp + 16) % 0xFFFF != (base + l4len) % 0xFFFF)
            return DEFER;  /* bad: judged in Python (is the packet one that is checked?) */
    }
    Key k;
    memset(&k, 0, sizeof(k));
    k.alen = (uint8_t)alen;
    memcpy(k.src, src, alen);
    memcpy(k.dst, dst, alen);
    k.sport = (uint16_t)be16(tcp);
    k.dport = (uint16_t)be16(tcp + 2);
    Py_ssize_t si = find_slot(t, &k);
    if (si < 0)
        return DEFER;
    Entry *e = &t->entries[t->slots[si].ent];
    uint32_t dir = t->slots[si].dir;
    if (e->expires < ts)
        return DEFER;
    /* TcpTracker._established_ack(), and for other options the general path it stands for:
     * TcpTracker.packet() on an assured ESTABLISHED entry with a plain ACK is the state table's
     * ES -> ES and tcp_in_window(), where the options count only through tcp_sack() */
    uint32_t s = dir, r = 1 - dir;
    if (e->td_maxwin[s] == 0)
        return DEFER;
    uint32_t seq = be32(tcp + 4), ack = be32(tcp + 8), datalen = l4len - doff;
    uint32_t sack = ack;
    if (doff > 20 && (e->flags[r] & F_SACK_PERM))
        sack = highest_sack(tcp + 20, doff - 20, ack);
    uint32_t end = seq + datalen;
    uint32_t r_end = e->td_end[r];
    uint32_t maxwin = e->td_maxwin[s];
    uint32_t maxackwin = maxwin > MAXACKWINCONST ? maxwin : MAXACKWINCONST;
    if ((uint32_t)(seq - e->td_maxend[s] - 1) < 0x80000000u
        || (uint32_t)(sack - r_end - 1) < 0x80000000u
        || (e->td_maxwin[r] && (uint32_t)(e->td_end[s] - e->td_maxwin[r] - 1 - end) < 0x80000000u)
        || (uint32_t)(r_end - maxackwin - 1 - sack) < 0x80000000u)
        return DEFER;
    uint32_t win_raw = be16(tcp + 14);
    uint32_t win = (uint32_t)(((uint64_t)win_raw << e->td_scale[s]) & MASK32);
    uint32_t swin = win + (sack - ack);
    if (maxwin < swin)
        e->td_maxwin[s] = swin;
    uint32_t fl = e->flags[s];
    if ((uint32_t)(e->td_end[s] - end) > 0x7FFFFFFFu) {
        e->td_end[s] = end;
        fl |= F_DATA_UNACK;
    }
    if (!(fl & F_MAXACK_SET)) {
        e->td_maxack[s] = ack;
        fl |= F_MAXACK_SET;
    } else if ((uint32_t)(e->td_maxack[s] - ack) > 0x7FFFFFFFu) {
        e->td_maxack[s] = ack;
    }
    e->flags[s] = fl;
    if (e->td_maxwin[r] != 0 && (uint32_t)(e->td_maxend[s] - end) > 0x7FFFFFFFu)
        e->td_maxwin[r] = e->td_maxwin[r] + (end - e->td_maxend[s]);
    uint32_t top = sack + win;
    if ((uint32_t)(e->td_maxend[r] - 1 - top) > 0x7FFFFFFFu)
        e->td_maxend[r] = win ? top : top + 1;
    if (ack == r_end)
        e->flags[r] &= ~F_DATA_UNACK;
    if (e->last_dir == dir && e->last_seq == seq && e->last_ack == ack && e->last_end == end
        && e->last_win == win_raw) {
        e->retrans++;
    } else {
        e->last_dir = dir;
        e->last_seq = seq;
        e->last_ack = ack;
        e->last_end = end;
        e->last_win = win_raw;
        e->retrans = 0;
    }
    e->last_index = ACK_SET;
    long long timeout;
    if (t->est_retrans >= 0 && e->retrans >= t->max_retrans)
        timeout = t->est_retrans;
    else if (t->est_unack >= 0 && ((e->flags[0] | e->flags[1]) & F_DATA_UNACK))
        timeout = t->est_unack;
    else if (t->est_retrans >= 0 && win_raw == 0)
        timeout = t->est_retrans;
    else
        timeout = t->est;
    e->expires = ts + (double)timeout;
    *ent = e;
    *direction = dir;
    return ACCEPTED;
}

/* what run() hands out for one accepted packet */
static int emit(Out *o, int mode, unsigned long long frame, double ts, size_t data_at, size_t caplen,
                unsigned int lt, Entry *e, uint32_t dir) {
    if (mode == 1) {
        if (out_reserve(o, 128) < 0)
            return -1;
        char *w = o->p + o->len;
        memcpy(w, J1, sizeof(J1) - 1);
        w += sizeof(J1) - 1;
        w += put_uint(w, frame);
        memcpy(w, J2, sizeof(J2) - 1);
        w += sizeof(J2) - 1;
        w += put_uint(w, e->flow);
        *w++ = '}';
        o->len = (size_t)(w - o->p);
    } else if (mode == 2) {
        /* "<QdIIIII": frame, time, data offset, captured length, flow, direction, link type */
        if (out_reserve(o, 36) < 0)
            return -1;
        uint8_t *w = (uint8_t *)o->p + o->len;
        uint64_t f64 = frame, t64;
        memcpy(&t64, &ts, 8);
        uint32_t vals[5] = {(uint32_t)data_at, (uint32_t)caplen, e->flow, dir, lt};
        for (int i = 0; i < 8; i++) {
            w[i] = (uint8_t)(f64 >> (8 * i));
            w[8 + i] = (uint8_t)(t64 >> (8 * i));
        }
        for (int j = 0; j < 5; j++)
            for (int i = 0; i < 4; i++)
                w[16 + 4 * j + i] = (uint8_t)(vals[j] >> (8 * i));
        o->len += 36;
    }
    return 0;
}

static PyObject *finish(Out *o, int mode, Py_buffer *view, size_t p, unsigned long long frame,
                        unsigned long long skipped[4]) {
    PyObject *out;
    if (mode == 1)
        out = o->len ? PyUnicode_DecodeASCII(o->p, (Py_ssize_t)o->len, NULL) : (Py_INCREF(Py_None), Py_None);
    else if (mode == 2)
        out = o->len ? PyBytes_FromStringAndSize(o->p, (Py_ssize_t)o->len) : (Py_INCREF(Py_None), Py_None);
    else
        out = (Py_INCREF(Py_None), Py_None);
    PyMem_Free(o->p);
    PyBuffer_Release(view);
    if (!out)
        return NULL;
    return Py_BuildValue("(nKNKK)", (Py_ssize_t)p, frame, out, skipped[NOT_IP], skipped[NOT_TCP]);
}

/* run(buf, pos, frame, limit, mode, known) -> (pos, frame, out, not_ip, not_tcp): classic pcap records
 * from buf[pos:]. mode 0: nothing; 1: out = the JSON lines of the accepted packets (str, each after
 * ",\n  "); 2: out = bytes, "<QdIIIII" (frame, time, data offset, captured length, flow, direction,
 * link type) per accepted packet. Frames without TCP are counted (not_ip, not_tcp) only for the reasons
 * in `known` (bit 2: "not IP", bit 3: "not TCP": those the summary already lists, so its order stays the
 * Python one's); the first of each stops the run. Stops before frame number `limit`. */
static PyObject *FastTable_run(FastTable *t, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos;
    unsigned long long frame, limit;
    int mode;
    unsigned int known;
    if (!PyArg_ParseTuple(args, "y*nKKiI", &view, &pos, &frame, &limit, &mode, &known))
        return NULL;
    unsigned long long skipped[4] = {0, 0, 0, 0};
    const uint8_t *buf = (const uint8_t *)view.buf;
    size_t blen = (size_t)view.len;
    size_t p = pos < 0 ? blen : (size_t)pos;
    Out o = {NULL, 0, 0};
    int big = t->big_endian;
    unsigned int lt = t->linktype;

    while (frame + 1 < limit && p + 16 <= blen && p + 16 <= 0xFFFFFFFFu) {
        const uint8_t *rec = buf + p;
        uint32_t sec = rd32(rec, big), frac = rd32(rec + 4, big), caplen = rd32(rec + 8, big);
        if (caplen > MAX_RECORD || caplen > blen - p - 16)
            break;
        double ts = (double)sec + (double)frac * t->scale;
        Entry *e;
        uint32_t dir;
        int verdict = judge(t, rec + 16, caplen, lt, ts, &e, &dir);
        if (verdict != ACCEPTED) {
            if (verdict == DEFER || !(known & (1u << verdict)))
                break;
            skipped[verdict]++;
            frame++;
            p += 16 + caplen;
            continue;
        }
        frame++;
        e->packets++;
        e->last_frame = frame;
        if (emit(&o, mode, frame, ts, p + 16, caplen, lt, e, dir) < 0) {
            PyMem_Free(o.p);
            PyBuffer_Release(&view);
            return NULL;
        }
        p += 16 + caplen;
    }
    return finish(&o, mode, &view, p, frame, skipped);
}

/* run_pcapng(buf, pos, frame, limit, mode, known, interfaces, big_endian) -> as run(), over
 * pcapng blocks from buf[pos:] in this section's byte order, `interfaces` the
 * section's [(linktype, seconds per tick), ...]. Only enhanced packet blocks without options are taken
 * (an option may be a direction flag, which turns on the forwarded-copy pairing: Python's). */
static PyObject *FastTable_run_pcapng(FastTable *t, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos;
    unsigned long long frame, limit;
    int mode;
    PyObject *ifaces;
    int big;
    unsigned int known;
    if (!PyArg_ParseTuple(args, "y*nKKiIO!p", &view, &pos, &frame, &limit, &mode, &known, &PyList_Type, &ifaces,
                          &big))
        return NULL;
    unsigned long long skipped[4] = {0, 0, 0, 0};
    enum { MAX_IFACES = 64 };
    unsigned int lts[MAX_IFACES];
    double ticks[MAX_IFACES];
    Py_ssize_t nif = PyList_GET_SIZE(ifaces);
    if (nif > MAX_IFACES)
        nif = MAX_IFACES;  /* packets of the others are Python's */
    for (Py_ssize_t i = 0; i < nif; i++) {
        PyObject *item = PyList_GET_ITEM(ifaces, i);
        unsigned long long lt;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || get_uint(PyTuple_GET_ITEM(item, 0), 0xFFFF, &lt) < 0
            || !PyFloat_Check(PyTuple_GET_ITEM(item, 1))) {
            nif = i;
            break;
        }
        lts[i] = (unsigned int)lt;
        ticks[i] = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(item, 1));
    }
    const uint8_t *buf = (const uint8_t *)view.buf;
    size_t blen = (size_t)view.len;
    size_t p = pos < 0 ? blen : (size_t)pos;
    Out o = {NULL, 0, 0};

    while (frame + 1 < limit && p + 28 <= blen && p + 28 <= 0xFFFFFFFFu) {
        const uint8_t *b = buf + p;
        uint32_t btype = rd32(b, big), bl = rd32(b + 4, big);
        /* _read_pcapng(): an enhanced packet block, whole in the buffer, sane length */
        if (btype != 6 || bl < 32 || (bl % 4) || bl > MAX_RECORD + 64 || bl > blen - p)
            break;
        size_t body = bl - 12;  /* without the header and the trailing length */
        uint32_t ifid = rd32(b + 8, big), hi = rd32(b + 12, big), lo = rd32(b + 16, big);
        uint32_t caplen = rd32(b + 20, big);
        if (ifid >= (uint32_t)nif || caplen > body - 20)
            break;
        if (body > 20 + (((size_t)caplen + 3) & ~(size_t)3) + 4)
            break;  /* options: perhaps a direction */
        double ts = (double)(((uint64_t)hi << 32) | lo) * ticks[ifid];
        Entry *e;
        uint32_t dir;
        int verdict = judge(t, b + 28, caplen, lts[ifid], ts, &e, &dir);
        if (verdict != ACCEPTED) {
            if (verdict == DEFER || !(known & (1u << verdict)))
                break;
            skipped[verdict]++;
            frame++;
            p += bl;
            continue;
        }
        frame++;
        e->packets++;
        e->last_frame = frame;
        if (emit(&o, mode, frame, ts, p + 28, caplen, lts[ifid], e, dir) < 0) {
            PyMem_Free(o.p);
            PyBuffer_Release(&view);
            return NULL;
        }
        p += bl;
    }
    return finish(&o, mode, &view, p, frame, skipped);
}

static PyMethodDef FastTable_methods[] = {
    {"adopt", (PyCFunction)FastTable_adopt, METH_VARARGS,
     "adopt(entry, [(key, direction), ...], state, flow) -> bool: take over an assured ESTABLISHED entry"},
    {"evict", (PyCFunction)FastTable_evict, METH_VARARGS,
     "evict(src, dst, sport, dport) -> None | (entry, state, packets, last_frame)"},
    {"evict_expired", (PyCFunction)FastTable_evict_expired, METH_VARARGS,
     "evict_expired(now) -> [(entry, state, packets, last_frame)] of the entries with expires < now"},
    {"drain", (PyCFunction)FastTable_drain, METH_NOARGS, "drain() -> every entry, evicted"},
    {"run", (PyCFunction)FastTable_run, METH_VARARGS,
     "run(buf, pos, frame, limit, mode, known) -> (pos, frame, out, not_ip, not_tcp): the pcap records it is sure of"},
    {"run_pcapng", (PyCFunction)FastTable_run_pcapng, METH_VARARGS,
     "run_pcapng(buf, pos, frame, limit, mode, known, interfaces, big_endian) -> the same over pcapng blocks"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods FastTable_seq = {
    .sq_length = (lenfunc)FastTable_len,
};

static PyTypeObject FastTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sysctl_doctor.conntrack._replayfast.FastTable",
    .tp_basicsize = sizeof(FastTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Adopted assured ESTABLISHED entries and the replay's fast path over pcap records.",
    .tp_new = FastTable_new,
    .tp_init = (initproc)FastTable_init,
    .tp_dealloc = (destructor)FastTable_dealloc,
    .tp_methods = FastTable_methods,
    .tp_as_sequence = &FastTable_seq,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_replayfast", "The replay's compiled fast path (see replay.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__replayfast(void) {
    if (PyType_Ready(&FastTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&FastTableType);
    if (PyModule_AddObject(m, "FastTable", (PyObject *)&FastTableType) < 0) {
        Py_DECREF(&FastTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
