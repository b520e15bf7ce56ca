/* consent_core._native's shared declarations: the Table every function reads, the untrusted
 * wire reader, the output buffer, and the functions one source file lends another.
 *
 * The accelerator computes what consent_core's pure-Python pass computes, faster. It must never do
 * I/O, keep state between calls, release the GIL, or trust its input: request bytes come from the
 * network, so every read is bounds-checked, varints stop at 10 bytes, lengths are checked against
 * what remains, and any doubt answers None (the caller then takes the Python path).
 *
 * Files: table.c (the Table type, built once per compiled Index), wire.c (decisions from
 * request bytes to response bytes), objects.c (passes over Python objects: split, granted),
 * many.c (the embedded decide_many's loop over Request objects), module.c (the module and its
 * method table).
 */
#ifndef CONSENT_NATIVE_H
#define CONSENT_NATIVE_H

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

static inline uint64_t hash_bytes(const char *s, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static inline Slot *map_find(const Map *m, const char *s, Py_ssize_t n) {
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

extern PyTypeObject TableType;

/* consent_core.outcome.Reason's values (consent.v1.Reason), for decide_batch_counted's slots */
#define NO_CONSENT 1
#define UNMAPPED 2
#define GRANTED 3
#define DENIED 4
#define EXEMPT 5
#define UNKNOWN_DESTINATION 6
#define N_SLOTS 18 /* slot = reason * 2 + allowed, as consent_sidecar.observe.metrics._slot */

/* A known destination's reason when consent does not block it (a need of 0 is exempt or unmapped). */
static inline int free_reason(const Slot *s) { return s->value != 0 ? GRANTED : s->exempt ? EXEMPT : UNMAPPED; }

/* -- wire format reading (untrusted) ------------------------------------------------------ */

/* 0 and *out on success; -1 when truncated, longer than 10 bytes or over 64 bits. */
static inline int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
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
static inline int read_len(const uint8_t **p, const uint8_t *end, const uint8_t **body, Py_ssize_t *len) {
    uint64_t n;
    if (read_varint(p, end, &n) < 0 || n > (uint64_t)(end - *p)) return -1;
    *body = *p;
    *len = (Py_ssize_t)n;
    *p += n;
    return 0;
}

/* Printable ASCII only (what Python's str.isprintable() accepts there); anything else is a doubt. */
static inline int printable_ascii(const uint8_t *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7E) return 0;
    return 1;
}

static inline int blocks(int64_t need, uint64_t granted) {
    return ((uint64_t)need & ~granted) != 0 && (need >= 0 || ((~(uint64_t)need) & granted) == 0);
}

/* -- the output buffer -------------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} Out;

static inline int out_reserve(Out *o, size_t more) {
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

static inline size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline void put_varint(Out *o, uint64_t v) { /* room reserved by the caller */
    while (v >= 0x80) {
        o->buf[o->len++] = (char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    o->buf[o->len++] = (char)v;
}

#define DOUBT 1 /* outside the plain case: the caller decides in Python */
#define FAIL -1 /* a Python exception is set (memory) */

/* consent_mask's answers besides FAIL (objects.c) */
#define GRANTED_OK 0
#define GRANTED_ODD 1      /* strict: a value that is not a bool */
#define GRANTED_NOT_OURS 2 /* a key that is not an exact str, or an odd bit: the pure loop's */
int consent_mask(PyObject *bits, PyObject *prefs, int strict, uint64_t *out); /* objects.c */

/* The module's functions, each defined in the file its comment names. */
PyObject *cc_decide_batch(PyObject *self, PyObject *args);         /* wire.c */
PyObject *cc_decide_batch_counted(PyObject *self, PyObject *args); /* wire.c */
PyObject *cc_decide_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs);         /* wire.c */
PyObject *cc_decide_request_counted(PyObject *self, PyObject *const *args, Py_ssize_t nargs); /* wire.c */
PyObject *cc_split(PyObject *self, PyObject *args);                /* objects.c */
PyObject *cc_granted(PyObject *self, PyObject *args);              /* objects.c */
PyObject *cc_many(PyObject *self, PyObject *args);                 /* many.c */

#endif
