/* consent_core._native: the optional C accelerator of the compiled decision; pure computation.
 *
 * Owns functions over tables that consent_core.native builds once per compiled Index:
 *   decide_batch(table, data) -> bytes | None
 *       an encoded DecideBatchRequest -> the encoded DecideBatchResponse, byte-identical to the
 *       server's Python path, or None for anything outside the plain case it handles (then the
 *       caller decides the whole batch in Python, exactly as without this module);
 *   decide_batch_counted(table, data) -> (body, entries, counts, shadow) | None
 *       the same, plus what the server's metrics count of the batch: decisions by reason and
 *       outcome, and shadow would-block counts, as consent_core's explained decisions reason them;
 *   split(need, unknown_need, granted, destinations, strict) -> (allowed, blocked) | None
 *       consent_core.split's pass over Python str ids.
 * It must never do I/O, keep state between calls, release the GIL, or trust its input: the bytes
 * come from the network, so every read is bounds-checked, varints stop at 10 bytes, lengths are
 * checked against what remains, and any doubt answers None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* -- an open-addressing table of byte strings -> int64 ------------------------------------ */

typedef struct {
    const char *key; /* NULL: empty slot; points into a bytes object the Table holds */
    Py_ssize_t len;
    int64_t value;
    int exempt; /* the need map: an `enforce: false` destination (its need is 0, its reason EXEMPT) */
    Py_ssize_t shadow_row; /* the need map: 1 + its row of shadow categories, 0 when none counts */
} Slot;

typedef struct {
    Slot *slots;
    size_t mask; /* capacity - 1, capacity a power of two at least twice the entries */
} Map;

static uint64_t hash_bytes(const char *s, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int map_init(Map *m, Py_ssize_t n) {
    size_t cap = 8;
    while (cap < (size_t)n * 2 + 1) cap <<= 1;
    m->slots = PyMem_Calloc(cap, sizeof(Slot));
    if (m->slots == NULL) return -1;
    m->mask = cap - 1;
    return 0;
}

static Slot *map_find(const Map *m, const char *s, Py_ssize_t n) {
    size_t i = (size_t)hash_bytes(s, n) & m->mask;
    for (;;) {
        Slot *slot = &m->slots[i];
        if (slot->key == NULL || (slot->len == n && memcmp(slot->key, s, (size_t)n) == 0)) return slot;
        i = (i + 1) & m->mask;
    }
}

/* -- the Table type ---------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Map need;        /* destination id -> need (consent_core.split's encoding) */
    Map bits;        /* enabled category id -> its bit */
    int64_t unknown_need;
    PyObject *keep;  /* a tuple of everything the maps and the fields below point into */
    const char **known;  /* the known ids in mapping order (for an empty destination list) */
    Py_ssize_t *known_len;
    int64_t *known_need;
    int *known_reason;   /* their reason when not blocked by consent (GRANTED, EXEMPT or UNMAPPED) */
    int shadow;          /* decide_batch_counted declines (shadow counts it cannot label) */
    Py_ssize_t *known_shadow_row;
    /* Shadow (dry-run) would-block counting: per row (a known destination whose allowed decisions
     * may count), its shadow mask, whether it is `any` (then counted only when no shadow
     * category is granted), its id as a str; per shadow bit, its column. */
    Py_ssize_t n_rows;
    uint64_t *row_mask;
    int *row_any;
    PyObject **row_name; /* borrowed from keep */
    int column[64];      /* bit -> column, -1 for a bit no row holds */
    PyObject *column_name[64]; /* borrowed from keep */
    int n_columns;
    Py_ssize_t n_known;
    Py_ssize_t max_destinations, max_id_bytes, max_batch;
    const char *policy_tail;  /* DecideResponse.policy, framed */
    Py_ssize_t policy_tail_len;
    const char *policy_field; /* DecideBatchResponse.policy, framed */
    Py_ssize_t policy_field_len;
} Table;

static void table_dealloc(Table *t) {
    PyMem_Free(t->need.slots);
    PyMem_Free(t->bits.slots);
    PyMem_Free(t->known);
    PyMem_Free(t->known_len);
    PyMem_Free(t->known_need);
    PyMem_Free(t->known_reason);
    PyMem_Free(t->known_shadow_row);
    PyMem_Free(t->row_mask);
    PyMem_Free(t->row_any);
    PyMem_Free(t->row_name);
    Py_XDECREF(t->keep);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int fill_map(Map *m, PyObject *dict, PyObject *keep_list) {
    if (map_init(m, PyDict_Size(dict)) < 0) return -1;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(dict, &pos, &k, &v)) {
        if (!PyBytes_CheckExact(k)) {
            PyErr_SetString(PyExc_TypeError, "table keys must be bytes");
            return -1;
        }
        long long value = PyLong_AsLongLong(v);
        if (value == -1 && PyErr_Occurred()) return -1;
        if (PyList_Append(keep_list, k) < 0) return -1;
        Slot *slot = map_find(m, PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k));
        slot->key = PyBytes_AS_STRING(k);
        slot->len = PyBytes_GET_SIZE(k);
        slot->value = value;
    }
    return 0;
}

/* consent_core.outcome.Reason's values (consent.v1.Reason), for decide_batch_counted's slots */
#define NO_CONSENT 1
#define UNMAPPED 2
#define GRANTED 3
#define DENIED 4
#define EXEMPT 5
#define UNKNOWN_DESTINATION 6
#define N_SLOTS 18 /* slot = reason * 2 + allowed, as consent_sidecar.observe.metrics._slot */

/* A known destination's reason when consent does not block it (a need of 0 is exempt or unmapped). */
static int free_reason(const Slot *s) { return s->value != 0 ? GRANTED : s->exempt ? EXEMPT : UNMAPPED; }

/* Table(need: dict[bytes, int], unknown_need, known: tuple[bytes, ...], bits: dict[bytes, int],
 *       max_destinations, max_id_bytes, max_batch, policy_tail: bytes, policy_field: bytes
 *       [, exempt: tuple[bytes, ...] (known ids with enforce: false), shadow: bool (decline counting),
 *        shadow_rows: tuple[tuple[bytes, str, int, bool], ...] (id, id, shadow mask, any),
 *        categories: tuple[str, ...] (enabled category ids by bit)]) */
static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *need, *known, *bits, *tail, *pfield, *exempt = NULL, *rows = NULL, *cats = NULL;
    int shadow = 0;
    long long unknown_need;
    Py_ssize_t max_destinations, max_id_bytes, max_batch;
    if (kwds != NULL && PyDict_Size(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "Table takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!LO!O!nnnSS|O!pO!O!", &PyDict_Type, &need, &unknown_need, &PyTuple_Type,
                          &known, &PyDict_Type, &bits, &max_destinations, &max_id_bytes, &max_batch, &tail,
                          &pfield, &PyTuple_Type, &exempt, &shadow, &PyTuple_Type, &rows, &PyTuple_Type, &cats))
        return NULL;
    Table *t = (Table *)type->tp_alloc(type, 0);
    if (t == NULL) return NULL;
    PyObject *keep_list = PyList_New(0);
    if (keep_list == NULL) goto fail;
    t->unknown_need = unknown_need;
    t->max_destinations = max_destinations;
    t->max_id_bytes = max_id_bytes;
    t->max_batch = max_batch;
    t->shadow = shadow;
    if (fill_map(&t->need, need, keep_list) < 0 || fill_map(&t->bits, bits, keep_list) < 0) goto fail;
    Py_ssize_t n_exempt = exempt == NULL ? 0 : PyTuple_GET_SIZE(exempt);
    for (Py_ssize_t i = 0; i < n_exempt; i++) {
        PyObject *k = PyTuple_GET_ITEM(exempt, i);
        if (!PyBytes_CheckExact(k)) {
            PyErr_SetString(PyExc_TypeError, "exempt ids must be bytes");
            goto fail;
        }
        Slot *slot = map_find(&t->need, PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k));
        if (slot->key == NULL) {
            PyErr_SetString(PyExc_ValueError, "an exempt id has no need");
            goto fail;
        }
        slot->exempt = 1;
    }
    for (int b = 0; b < 64; b++) t->column[b] = -1;
    Py_ssize_t n_rows = rows == NULL ? 0 : PyTuple_GET_SIZE(rows);
    if (n_rows > 0 && cats == NULL) {
        PyErr_SetString(PyExc_TypeError, "shadow rows need the category ids");
        goto fail;
    }
    t->row_mask = PyMem_Calloc((size_t)n_rows + 1, sizeof(uint64_t));
    t->row_any = PyMem_Calloc((size_t)n_rows + 1, sizeof(int));
    t->row_name = PyMem_Calloc((size_t)n_rows + 1, sizeof(PyObject *));
    if (t->row_mask == NULL || t->row_any == NULL || t->row_name == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n_rows; i++) {
        PyObject *row = PyTuple_GET_ITEM(rows, i), *k, *name;
        unsigned long long mask;
        int any;
        if (!PyTuple_Check(row) || !PyArg_ParseTuple(row, "SUKp", &k, &name, &mask, &any)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "a shadow row is a tuple");
            goto fail;
        }
        Slot *slot = map_find(&t->need, PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k));
        if (slot->key == NULL || PyList_Append(keep_list, name) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a shadow row's id has no need");
            goto fail;
        }
        slot->shadow_row = i + 1;
        t->row_mask[i] = mask;
        t->row_any[i] = any;
        t->row_name[i] = name;
        for (int b = 0; b < 64; b++) {
            if (!(mask >> b & 1) || t->column[b] >= 0) continue;
            if (b >= PyTuple_GET_SIZE(cats) || !PyUnicode_Check(PyTuple_GET_ITEM(cats, b))) {
                PyErr_SetString(PyExc_ValueError, "a shadow bit has no category id");
                goto fail;
            }
            if (PyList_Append(keep_list, PyTuple_GET_ITEM(cats, b)) < 0) goto fail;
            t->column_name[t->n_columns] = PyTuple_GET_ITEM(cats, b);
            t->column[b] = t->n_columns++;
        }
    }
    t->n_rows = n_rows;
    Py_ssize_t n = PyTuple_GET_SIZE(known);
    t->known = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    t->known_len = PyMem_Calloc((size_t)n + 1, sizeof(Py_ssize_t));
    t->known_need = PyMem_Calloc((size_t)n + 1, sizeof(int64_t));
    t->known_reason = PyMem_Calloc((size_t)n + 1, sizeof(int));
    t->known_shadow_row = PyMem_Calloc((size_t)n + 1, sizeof(Py_ssize_t));
    if (t->known == NULL || t->known_len == NULL || t->known_need == NULL || t->known_reason == NULL ||
        t->known_shadow_row == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(known, i);
        if (!PyBytes_CheckExact(k)) {
            PyErr_SetString(PyExc_TypeError, "known ids must be bytes");
            goto fail;
        }
        Slot *slot = map_find(&t->need, PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k));
        if (slot->key == NULL) {
            PyErr_SetString(PyExc_ValueError, "a known id has no need");
            goto fail;
        }
        t->known[i] = slot->key;
        t->known_len[i] = slot->len;
        t->known_need[i] = slot->value;
        t->known_reason[i] = free_reason(slot);
        t->known_shadow_row[i] = slot->shadow_row;
    }
    t->n_known = n;
    if (PyList_Append(keep_list, tail) < 0 || PyList_Append(keep_list, pfield) < 0) goto fail;
    t->policy_tail = PyBytes_AS_STRING(tail);
    t->policy_tail_len = PyBytes_GET_SIZE(tail);
    t->policy_field = PyBytes_AS_STRING(pfield);
    t->policy_field_len = PyBytes_GET_SIZE(pfield);
    t->keep = PyList_AsTuple(keep_list);
    if (t->keep == NULL) goto fail;
    Py_DECREF(keep_list);
    return (PyObject *)t;
fail:
    Py_XDECREF(keep_list);
    Py_DECREF(t);
    return NULL;
}

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "consent_core._native.Table",
    .tp_basicsize = sizeof(Table),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One snapshot's compiled decision table for decide_batch (immutable).",
    .tp_new = table_new,
};

/* -- wire format reading (untrusted) ------------------------------------------------------ */

/* 0 and *out on success; -1 when truncated, longer than 10 bytes or over 64 bits. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (*p >= end) return -1;
        uint8_t b = *(*p)++;
        if (i == 9 && b > 1) return -1;
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* A length-delimited field's body: 0 on success, -1 when its length passes the end. */
static int read_len(const uint8_t **p, const uint8_t *end, const uint8_t **body, Py_ssize_t *len) {
    uint64_t n;
    if (read_varint(p, end, &n) < 0 || n > (uint64_t)(end - *p)) return -1;
    *body = *p;
    *len = (Py_ssize_t)n;
    *p += n;
    return 0;
}

/* Printable ASCII only (what Python's str.isprintable() accepts there); anything else is a doubt. */
static int printable_ascii(const uint8_t *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7E) return 0;
    return 1;
}

static int blocks(int64_t need, uint64_t granted) {
    return ((uint64_t)need & ~granted) != 0 && (need >= 0 || ((~(uint64_t)need) & granted) == 0);
}

/* -- the output buffer -------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} Out;

static int out_reserve(Out *o, size_t more) {
    if (o->cap - o->len >= more) return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap - o->len < more) {
        if (cap > PY_SSIZE_T_MAX / 2) return -1;
        cap *= 2;
    }
    char *b = PyMem_Realloc(o->buf, cap);
    if (b == NULL) return -1;
    o->buf = b;
    o->cap = cap;
    return 0;
}

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void put_varint(Out *o, uint64_t v) { /* room reserved by the caller */
    while (v >= 0x80) {
        o->buf[o->len++] = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    o->buf[o->len++] = (char)v;
}

/* -- decide_batch ------------------------------------------------------------------------- */

typedef struct {
    const char *id;
    Py_ssize_t len;
    int blocked;
    int reason; /* when counting: the reason if not blocked (GRANTED, EXEMPT, UNMAPPED; 0 unknown) */
    Py_ssize_t shadow_row; /* when counting: 1 + its shadow row, or 0 */
} Pick;

typedef struct {
    Pick *at;
    Py_ssize_t cap;
} Picks;

/* Room for `n` picks (grown on demand: most requests name a few ids, the limit allows thousands). */
static int picks_reserve(Picks *ps, Py_ssize_t n) {
    if (n <= ps->cap) return 0;
    Py_ssize_t cap = ps->cap ? ps->cap : 64;
    while (cap < n) cap *= 2;
    Pick *at = PyMem_Realloc(ps->at, (size_t)cap * sizeof(Pick));
    if (at == NULL) return -1;
    ps->at = at;
    ps->cap = cap;
    return 0;
}

#define DOUBT 1 /* outside the plain case: the caller decides in Python */
#define FAIL -1 /* a Python exception is set (memory) */

/* The need of a request id, and into *reason what free_reason says of it (0: an id the table does not hold). */
static int64_t need_of(const Table *t, const char *id, Py_ssize_t n, int *reason, Py_ssize_t *shadow_row) {
    Slot *s = map_find(&t->need, id, n);
    if (s->key == NULL) {
        const char *slash = memchr(id, '/', (size_t)n);
        if (slash != NULL) /* `<destination>/<instance>` decides as <destination> */
            s = map_find(&t->need, id, slash - id);
    }
    if (s->key != NULL) {
        *reason = free_reason(s);
        *shadow_row = s->shadow_row;
        return s->value;
    }
    *reason = 0;
    *shadow_row = 0;
    return t->unknown_need;
}

typedef struct {
    uint64_t *slots;  /* N_SLOTS */
    uint64_t *shadow; /* n_rows * n_columns: would-block counts by (row, shadow category column) */
} Counts;

/* Adds one decided entry's picks to `c` as consent_core's explained decisions would reason them
 * (consent_sidecar.observe.metrics.tally): slots by reason * 2 + allowed, and for each allowed
 * destination with a shadow row, the shadow categories enforcing which would have blocked it. */
static void count_entry(const Table *t, const Pick *picks, Py_ssize_t n, int has_consent, uint64_t granted,
                        Counts *c) {
    uint64_t *counts = c->slots;
    if (!has_consent) { /* no consent object: everything allowed, NO_CONSENT (unknown ids too) */
        counts[NO_CONSENT * 2 + 1] += (uint64_t)n;
        return;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = picks[i].reason;
        if (picks[i].blocked) { /* unknown ids block only under `unknown_destinations: deny` */
            counts[(r == 0 ? UNKNOWN_DESTINATION : DENIED) * 2]++;
            continue;
        }
        counts[(r == 0 ? UNMAPPED : r) * 2 + 1]++;
        Py_ssize_t row = picks[i].shadow_row - 1;
        if (row < 0) continue;
        uint64_t mask = t->row_mask[row];
        /* `any` (and no required category): would block only when no shadow category is granted */
        uint64_t missing = t->row_any[row] ? ((mask & granted) ? 0 : mask) : (mask & ~granted);
        while (missing) {
            int b = __builtin_ctzll(missing);
            missing &= missing - 1;
            c->shadow[row * t->n_columns + t->column[b]]++;
        }
    }
}

/* One DecideRequest entry -> its framed `responses` field appended to `o`; 0, DOUBT or FAIL.
 * With `counts` (else NULL), its decisions are added there (count_entry). */
static int decide_entry(const Table *t, const uint8_t *p, const uint8_t *end, Picks *ps, Out *o,
                        Counts *counts) {
    Pick *picks = ps->at;
    int has_consent = 0;
    uint64_t granted = 0;
    Py_ssize_t n = 0;
    while (p < end) {
        uint64_t tag;
        if (read_varint(&p, end, &tag) < 0) return DOUBT;
        if (tag == (1 << 3 | 2)) { /* consent: a map<string, bool> of entries (field 1) */
            const uint8_t *c, *cend;
            Py_ssize_t clen;
            if (read_len(&p, end, &c, &clen) < 0) return DOUBT;
            cend = c + clen;
            has_consent = 1;
            while (c < cend) {
                const uint8_t *e;
                Py_ssize_t elen;
                if (read_varint(&c, cend, &tag) < 0 || tag != (1 << 3 | 2) || read_len(&c, cend, &e, &elen) < 0)
                    return DOUBT;
                const uint8_t *eend = e + elen, *key = (const uint8_t *)"";
                Py_ssize_t klen = 0;
                uint64_t value = 0;
                while (e < eend) {
                    if (read_varint(&e, eend, &tag) < 0) return DOUBT;
                    if (tag == (1 << 3 | 2)) {
                        if (read_len(&e, eend, &key, &klen) < 0) return DOUBT;
                    } else if (tag == (2 << 3 | 0)) {
                        if (read_varint(&e, eend, &value) < 0) return DOUBT;
                    } else {
                        return DOUBT;
                    }
                }
                if (!printable_ascii(key, klen)) return DOUBT;
                Slot *s = map_find(&t->bits, (const char *)key, klen);
                if (s->key != NULL) { /* the last value of a key wins, as in protobuf's map */
                    granted = value ? (granted | (uint64_t)s->value) : (granted & ~(uint64_t)s->value);
                }
            }
        } else if (tag == (3 << 3 | 2)) { /* a destination id */
            const uint8_t *d;
            Py_ssize_t dlen;
            if (read_len(&p, end, &d, &dlen) < 0) return DOUBT;
            if (n >= t->max_destinations || dlen == 0 || dlen > t->max_id_bytes || d[0] == '/' ||
                !printable_ascii(d, dlen))
                return DOUBT;
            if (picks_reserve(ps, n + 1) < 0) {
                PyErr_NoMemory();
                return FAIL;
            }
            picks = ps->at;
            picks[n].id = (const char *)d;
            picks[n].len = dlen;
            n++;
        } else if (tag == (4 << 3 | 0)) { /* explain: only false is plain */
            uint64_t v;
            if (read_varint(&p, end, &v) < 0 || v != 0) return DOUBT;
        } else {
            return DOUBT; /* segment_event, unknown fields, unexpected wire types */
        }
    }
    if (n == 0) { /* every known destination, in mapping order */
        if (picks_reserve(ps, t->n_known) < 0) {
            PyErr_NoMemory();
            return FAIL;
        }
        picks = ps->at;
        for (Py_ssize_t i = 0; i < t->n_known; i++) {
            picks[i].id = t->known[i];
            picks[i].len = t->known_len[i];
            picks[i].blocked = has_consent && blocks(t->known_need[i], granted);
            picks[i].reason = t->known_reason[i];
            picks[i].shadow_row = t->known_shadow_row[i];
        }
        n = t->n_known;
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            picks[i].blocked = has_consent && blocks(
                need_of(t, picks[i].id, picks[i].len, &picks[i].reason, &picks[i].shadow_row), granted);
    }
    if (counts != NULL) count_entry(t, picks, n, has_consent, granted, counts);
    size_t body = (size_t)t->policy_tail_len;
    for (Py_ssize_t i = 0; i < n; i++) body += 1 + varint_size((uint64_t)picks[i].len) + (size_t)picks[i].len;
    if (out_reserve(o, 1 + varint_size(body) + body) < 0) {
        PyErr_NoMemory();
        return FAIL;
    }
    o->buf[o->len++] = 0x0A;
    put_varint(o, body);
    for (int pass = 0; pass < 2; pass++) { /* allowed (field 1), then blocked (field 2), in request order */
        for (Py_ssize_t i = 0; i < n; i++) {
            if (picks[i].blocked != pass) continue;
            o->buf[o->len++] = pass ? 0x12 : 0x0A;
            put_varint(o, (uint64_t)picks[i].len);
            memcpy(o->buf + o->len, picks[i].id, (size_t)picks[i].len);
            o->len += (size_t)picks[i].len;
        }
    }
    memcpy(o->buf + o->len, t->policy_tail, (size_t)t->policy_tail_len);
    o->len += (size_t)t->policy_tail_len;
    return 0;
}

/* The batch -> its response bytes (PyBytes), Py_None outside the plain case, NULL with an exception
 * set; with `counts` (N_SLOTS zeroed), the decisions of every entry added there and the number of
 * entries into *n_entries. */
static PyObject *run_batch(Table *t, Py_buffer *view_, Counts *counts, Py_ssize_t *n_entries) {
    Py_buffer view = *view_;
    const uint8_t *p = view.buf, *end = p + view.len;
    Picks picks = {NULL, 0};
    Out o = {NULL, 0, 0};
    PyObject *result = NULL;
    int rc = DOUBT;
    Py_ssize_t entries = 0;
    while (p < end) {
        uint64_t tag;
        const uint8_t *e;
        Py_ssize_t elen;
        if (read_varint(&p, end, &tag) < 0 || tag != (1 << 3 | 2) || read_len(&p, end, &e, &elen) < 0 ||
            ++entries > t->max_batch) {
            rc = DOUBT;
            goto done;
        }
        rc = decide_entry(t, e, e + elen, &picks, &o, counts);
        if (rc != 0) goto done;
    }
    if (out_reserve(&o, (size_t)t->policy_field_len + 1) < 0) {
        PyErr_NoMemory();
        rc = FAIL;
        goto done;
    }
    memcpy(o.buf + o.len, t->policy_field, (size_t)t->policy_field_len);
    o.len += (size_t)t->policy_field_len;
    rc = 0;
done:
    if (rc == 0) {
        result = PyBytes_FromStringAndSize(o.buf, (Py_ssize_t)o.len);
    } else if (rc == DOUBT) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(o.buf);
    PyMem_Free(picks.at);
    *n_entries = entries;
    return result;
}

static PyObject *decide_batch(PyObject *Py_UNUSED(self), PyObject *args) {
    Table *t;
    Py_buffer view;
    Py_ssize_t entries;
    if (!PyArg_ParseTuple(args, "O!y*", &TableType, &t, &view)) return NULL;
    PyObject *result = run_batch(t, &view, NULL, &entries);
    PyBuffer_Release(&view);
    return result;
}

/* The nonzero shadow counts as a tuple of (category id, destination id, count), the shape of
 * consent_sidecar.observe.metrics.Tally.shadow; NULL with an exception set. */
static PyObject *shadow_tuple(const Table *t, const uint64_t *shadow) {
    Py_ssize_t cells = t->n_rows * t->n_columns, nonzero = 0;
    for (Py_ssize_t i = 0; i < cells; i++) nonzero += shadow[i] != 0;
    PyObject *out = PyTuple_New(nonzero);
    if (out == NULL) return NULL;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < cells; i++) {
        if (!shadow[i]) continue;
        PyObject *item = Py_BuildValue("(OOK)", t->column_name[i % t->n_columns], t->row_name[i / t->n_columns],
                                       (unsigned long long)shadow[i]);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, k++, item);
    }
    return out;
}

/* decide_batch_counted(table, data) -> (body, entries, counts, shadow) | None: decide_batch, plus
 * the number of entries, a tuple of N_SLOTS decision counts (slot = reason * 2 + allowed) and the
 * shadow would-block counts as (category, destination, count) tuples. None also when the table
 * was built unable to label shadow counts. */
static PyObject *decide_batch_counted(PyObject *Py_UNUSED(self), PyObject *args) {
    Table *t;
    Py_buffer view;
    Py_ssize_t entries = 0;
    uint64_t slots[N_SLOTS] = {0};
    if (!PyArg_ParseTuple(args, "O!y*", &TableType, &t, &view)) return NULL;
    if (t->shadow) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    Counts counts = {slots, NULL};
    if (t->n_rows > 0) {
        counts.shadow = PyMem_Calloc((size_t)(t->n_rows * t->n_columns), sizeof(uint64_t));
        if (counts.shadow == NULL) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
    }
    PyObject *body = run_batch(t, &view, &counts, &entries), *tally = NULL, *shadow = NULL;
    PyBuffer_Release(&view);
    if (body == NULL || body == Py_None) goto done;
    tally = PyTuple_New(N_SLOTS);
    if (tally == NULL) goto fail;
    for (Py_ssize_t i = 0; i < N_SLOTS; i++) {
        PyObject *c = PyLong_FromUnsignedLongLong(slots[i]);
        if (c == NULL) goto fail;
        PyTuple_SET_ITEM(tally, i, c);
    }
    shadow = counts.shadow == NULL ? PyTuple_New(0) : shadow_tuple(t, counts.shadow);
    if (shadow == NULL) goto fail;
    PyMem_Free(counts.shadow);
    return Py_BuildValue("(NnNN)", body, entries, tally, shadow);
fail:
    Py_XDECREF(tally);
    Py_CLEAR(body);
done:
    PyMem_Free(counts.shadow);
    return body;
}

/* -- split over Python objects ------------------------------------------------------------ */

/* split(need: dict[str, int], unknown_need, granted: int, destinations: tuple[str, ...], strict)
 * -> (allowed, blocked) in request order, or None for an id that is not an exact str, a mask or
 * need over 64 bits, or (strict) any id the table does not hold (the caller's pass then resolves
 * and validates it). */
static PyObject *split(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *need, *dests, *granted_obj;
    long long unknown_need;
    int strict;
    if (!PyArg_ParseTuple(args, "O!LO!O!p", &PyDict_Type, &need, &unknown_need, &PyLong_Type, &granted_obj,
                          &PyTuple_Type, &dests, &strict))
        return NULL;
    unsigned long long granted = PyLong_AsUnsignedLongLong(granted_obj);
    if (granted == (unsigned long long)-1 && PyErr_Occurred()) { /* negative or over 64 bits: not ours */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(dests);
    PyObject *al = PyTuple_New(n), *bl = PyTuple_New(n);
    Py_ssize_t na = 0, nb = 0;
    if (al == NULL || bl == NULL) goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PyTuple_GET_ITEM(dests, i);
        if (!PyUnicode_CheckExact(d)) goto doubt;
        PyObject *v = PyDict_GetItemWithError(need, d); /* borrowed */
        if (v == NULL) {
            if (PyErr_Occurred()) goto fail;
            if (strict) goto doubt;
            Py_ssize_t slash = PyUnicode_FindChar(d, '/', 0, PyUnicode_GET_LENGTH(d), 1);
            if (slash == -2) goto fail;
            if (slash >= 0) {
                PyObject *base = PyUnicode_Substring(d, 0, slash);
                if (base == NULL) goto fail;
                v = PyDict_GetItemWithError(need, base);
                Py_DECREF(base);
                if (v == NULL && PyErr_Occurred()) goto fail;
            }
        }
        int64_t nd = unknown_need;
        if (v != NULL) {
            if (!PyLong_CheckExact(v)) goto doubt;
            int overflow;
            nd = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow) goto doubt; /* a need over 64 bits: the pure pass */
            if (nd == -1 && PyErr_Occurred()) goto fail;
        }
        Py_INCREF(d);
        if (blocks(nd, granted)) {
            PyTuple_SET_ITEM(bl, nb++, d);
        } else {
            PyTuple_SET_ITEM(al, na++, d);
        }
    }
    if (nb == 0) { /* everything allowed: the request's own tuple */
        Py_DECREF(al);
        Py_DECREF(bl);
        return Py_BuildValue("(O())", dests);
    }
    if (_PyTuple_Resize(&al, na) < 0 || _PyTuple_Resize(&bl, nb) < 0) goto fail;
    return Py_BuildValue("(NN)", al, bl);
doubt:
    Py_XDECREF(al);
    Py_XDECREF(bl);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(al);
    Py_XDECREF(bl);
    return NULL;
}

/* -- a consent object's granted mask ----------------------------------------------------- */

/* granted(bits: dict[str, int], preferences: dict, strict) -> int | None: Index.granted_mask
 * (strict false: values other than True ignored) or granted_mask_strict (strict: None when a
 * value is not a bool or an id not an exact str). -1 when it is not this function's to answer
 * (a key that is not an exact str, whose hash or equality could run Python code, or a bit over
 * 64): the caller then takes its pure loop. */
static PyObject *granted(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *bits, *prefs;
    int strict;
    if (!PyArg_ParseTuple(args, "O!O!p", &PyDict_Type, &bits, &PyDict_Type, &prefs, &strict)) return NULL;
    uint64_t g = 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(prefs, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) return PyLong_FromLong(-1);
        if (v == Py_True) {
            PyObject *b = PyDict_GetItemWithError(bits, k); /* borrowed; exact str keys run no Python code */
            if (b == NULL) {
                if (PyErr_Occurred()) return NULL;
                continue;
            }
            if (!PyLong_CheckExact(b)) return PyLong_FromLong(-1);
            unsigned long long bit = PyLong_AsUnsignedLongLong(b);
            if (bit == (unsigned long long)-1 && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
                PyErr_Clear();
                return PyLong_FromLong(-1);
            }
            g |= bit;
        } else if (strict && v != Py_False) {
            Py_RETURN_NONE;
        }
    }
    return PyLong_FromUnsignedLongLong(g);
}

static PyMethodDef methods[] = {
    {"granted", granted, METH_VARARGS,
     "granted(bits, preferences, strict) -> the granted mask, None (strict: an odd entry), or -1 (not ours)."},
    {"decide_batch", decide_batch, METH_VARARGS,
     "decide_batch(table, data) -> the encoded DecideBatchResponse, or None outside the plain case."},
    {"decide_batch_counted", decide_batch_counted, METH_VARARGS,
     "decide_batch_counted(table, data) -> (body, entries, counts by reason * 2 + allowed, shadow), or None."},
    {"split", split, METH_VARARGS,
     "split(need, unknown_need, granted, destinations, strict) -> (allowed, blocked), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "consent_core._native",
    "The optional C accelerator of consent_core's compiled decision (pure computation).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&TableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
