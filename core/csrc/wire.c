/* Decisions from request bytes to response bytes, byte-identical to the server's Python path:
 * decide_batch / decide_batch_counted (the plain DecideBatch, with (counted) what its metrics count)
 * and decide_request / decide_request_counted (one plain Decide or DecideStream message). */
#include "native.h"

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
    Pick *local; /* the caller's stack array `at` starts as (cap picks), or NULL */
} Picks;

#define LOCAL_PICKS 64

/* Room for `n` picks (grown on demand: most requests name a few ids, the limit allows thousands). */
static int picks_reserve(Picks *ps, Py_ssize_t n) {
    if (n <= ps->cap) return 0;
    Py_ssize_t cap = ps->cap ? ps->cap : LOCAL_PICKS;
    while (cap < n) cap *= 2;
    Pick *at;
    if (ps->at != NULL && ps->at == ps->local) { /* leaving the stack array: copy what it holds */
        at = PyMem_Malloc((size_t)cap * sizeof(Pick));
        if (at != NULL) memcpy(at, ps->local, (size_t)ps->cap * sizeof(Pick));
    } else {
        at = PyMem_Realloc(ps->at, (size_t)cap * sizeof(Pick));
    }
    if (at == NULL) return -1;
    ps->at = at;
    ps->cap = cap;
    return 0;
}

static void picks_free(Picks *ps) {
    if (ps->at != ps->local) PyMem_Free(ps->at);
}


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

/* The shadow categories (bits) of shadow row `row` that would have blocked an allowed destination. */
static inline uint64_t shadow_missing(const Table *t, Py_ssize_t row, uint64_t granted) {
    uint64_t mask = t->row_mask[row];
    /* `any` (and no required category): would block only when no shadow category is granted */
    return t->row_any[row] ? ((mask & granted) ? 0 : mask) : (mask & ~granted);
}

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
        if (row < 0 || c->shadow == NULL) continue; /* NULL: decide_request_counted counts them itself */
        uint64_t missing = shadow_missing(t, row, granted);
        while (missing) {
            int b = __builtin_ctzll(missing);
            missing &= missing - 1;
            c->shadow[row * t->n_columns + t->column[b]]++;
        }
    }
}

/* One DecideRequest's bytes -> its picks in ps->at[0..*n) (request order; every known id when it
 * names none), decided; 0, DOUBT or FAIL. With `counts` (else NULL), its decisions are added there
 * (count_entry); *has_consent and *granted say what consent it held. */
static int pick_entry(const Table *t, const uint8_t *p, const uint8_t *end, Picks *ps, Py_ssize_t *n_out,
                      Counts *counts, int *has_consent_out, uint64_t *granted_out) {
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
    *n_out = n;
    *has_consent_out = has_consent;
    *granted_out = granted;
    return 0;
}

/* The size of the DecideResponse body put_body writes for `picks`. */
static size_t body_size(const Table *t, const Pick *picks, Py_ssize_t n) {
    size_t body = (size_t)t->policy_tail_len;
    for (Py_ssize_t i = 0; i < n; i++) body += 1 + varint_size((uint64_t)picks[i].len) + (size_t)picks[i].len;
    return body;
}

/* Writes the DecideResponse body (allowed, blocked, policy) at `o` (room reserved by the caller). */
static void put_body(const Table *t, const Pick *picks, Py_ssize_t n, Out *o) {
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
}

/* One DecideRequest entry -> its framed `responses` field appended to `o`; 0, DOUBT or FAIL. */
static int decide_entry(const Table *t, const uint8_t *p, const uint8_t *end, Picks *ps, Out *o,
                        Counts *counts) {
    Py_ssize_t n;
    int has_consent;
    uint64_t granted;
    int rc = pick_entry(t, p, end, ps, &n, counts, &has_consent, &granted);
    if (rc != 0) return rc;
    size_t body = body_size(t, ps->at, n);
    if (out_reserve(o, 1 + varint_size(body) + body) < 0) {
        PyErr_NoMemory();
        return FAIL;
    }
    o->buf[o->len++] = 0x0A;
    put_varint(o, body);
    put_body(t, ps->at, n, o);
    return 0;
}

/* The batch -> its response bytes (PyBytes), Py_None outside the plain case, NULL with an exception
 * set; with `counts` (N_SLOTS zeroed), the decisions of every entry added there and the number of
 * entries into *n_entries. */
static PyObject *run_batch(Table *t, Py_buffer *view_, Counts *counts, Py_ssize_t *n_entries) {
    Py_buffer view = *view_;
    const uint8_t *p = view.buf, *end = p + view.len;
    Pick local[LOCAL_PICKS];
    Picks picks = {local, LOCAL_PICKS, local};
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
    picks_free(&picks);
    *n_entries = entries;
    return result;
}

PyObject *cc_decide_batch(PyObject *Py_UNUSED(self), PyObject *args) {
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
PyObject *cc_decide_batch_counted(PyObject *Py_UNUSED(self), PyObject *args) {
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


/* -- one request (Decide, a DecideStream message) ------------------------------------------- */

/* The DecideResponse body of `picks` as a new bytes object (NULL with an exception set). */
static PyObject *body_bytes(const Table *t, const Pick *picks, Py_ssize_t n) {
    size_t size = body_size(t, picks, n);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (b == NULL) return NULL;
    Out o = {PyBytes_AS_STRING(b), 0, size};
    put_body(t, picks, n, &o);
    return b;
}

/* (table, data) from a fastcall's arguments: data must be bytes (what gRPC hands a bytes handler). */
static int request_args(PyObject *const *args, Py_ssize_t nargs, Table **t, const uint8_t **p, const uint8_t **end) {
    if (nargs != 2 || !PyObject_TypeCheck(args[0], &TableType) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "expected (Table, bytes)");
        return -1;
    }
    *t = (Table *)args[0];
    *p = (const uint8_t *)PyBytes_AS_STRING(args[1]);
    *end = *p + PyBytes_GET_SIZE(args[1]);
    return 0;
}

/* decide_request(table, data) -> bytes | None: one encoded DecideRequest -> its encoded
 * DecideResponse, or None outside the plain case (as decide_batch's entries). */
PyObject *cc_decide_request(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    Table *t;
    const uint8_t *p, *end;
    if (request_args(args, nargs, &t, &p, &end) < 0) return NULL;
    Pick local[LOCAL_PICKS];
    Picks picks = {local, LOCAL_PICKS, local};
    Py_ssize_t n;
    int has_consent;
    uint64_t granted;
    int rc = pick_entry(t, p, end, &picks, &n, NULL, &has_consent, &granted);
    PyObject *result = rc == 0 ? body_bytes(t, picks.at, n) : rc == DOUBT ? Py_NewRef(Py_None) : NULL;
    picks_free(&picks);
    return result;
}

static int by_row(const void *a, const void *b) {
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    return (x > y) - (x < y);
}

/* A request's shadow would-block counts as a tuple of (category id, destination id, count). Every
 * allowed pick of one shadow row misses the same shadow categories (one granted mask), so each
 * (row, category) counts the row's allowed picks: the rows are sorted and counted in runs, not
 * summed in a table as large as the mapping's shadow rows. NULL with an exception set. */
static PyObject *request_shadow(const Table *t, const Pick *picks, Py_ssize_t n, uint64_t granted) {
    Py_ssize_t local[LOCAL_PICKS], *rows = local, m = 0, cells = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!picks[i].blocked && picks[i].shadow_row > 0) m++;
    if (m == 0) return PyTuple_New(0);
    if (m > LOCAL_PICKS && (rows = PyMem_Malloc((size_t)m * sizeof(Py_ssize_t))) == NULL) return PyErr_NoMemory();
    m = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!picks[i].blocked && picks[i].shadow_row > 0) rows[m++] = picks[i].shadow_row - 1;
    if (m > 1) qsort(rows, (size_t)m, sizeof(Py_ssize_t), by_row);
    for (Py_ssize_t i = 0; i < m; i++)
        if (i == 0 || rows[i] != rows[i - 1]) cells += __builtin_popcountll(shadow_missing(t, rows[i], granted));
    PyObject *out = PyTuple_New(cells);
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0, run; out != NULL && i < m; i += run) {
        for (run = 1; i + run < m && rows[i + run] == rows[i]; run++) {}
        uint64_t missing = shadow_missing(t, rows[i], granted);
        while (missing) {
            int b = __builtin_ctzll(missing);
            missing &= missing - 1;
            PyObject *item = Py_BuildValue("(OOn)", t->column_name[t->column[b]], t->row_name[rows[i]], run);
            if (item == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyTuple_SET_ITEM(out, k++, item);
        }
    }
    if (rows != local) PyMem_Free(rows);
    return out;
}

/* decide_request_counted(table, data) -> (body, reasons, shadow) | None: decide_request, plus what
 * the metrics count of it in consent_sidecar.observe.metrics.Tally's shapes: reasons, the nonzero
 * (slot, count) pairs (slot = reason * 2 + allowed), and shadow, the (category, destination, count)
 * would-block counts (an empty tuple when none). None also when the table was built unable to
 * label shadow counts. Only nonzero counts are returned: this runs per message, not per batch. */
PyObject *cc_decide_request_counted(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    Table *t;
    const uint8_t *p, *end;
    if (request_args(args, nargs, &t, &p, &end) < 0) return NULL;
    if (t->shadow) Py_RETURN_NONE;
    Pick local[LOCAL_PICKS];
    Picks picks = {local, LOCAL_PICKS, local};
    uint64_t slots[N_SLOTS] = {0};
    Counts counts = {slots, NULL};
    Py_ssize_t n;
    int has_consent;
    uint64_t granted;
    PyObject *result = NULL, *body = NULL, *reasons = NULL, *shadow = NULL;
    int rc = pick_entry(t, p, end, &picks, &n, &counts, &has_consent, &granted);
    if (rc == DOUBT) result = Py_NewRef(Py_None);
    if (rc != 0) goto done;
    Py_ssize_t nonzero = 0;
    for (int i = 0; i < N_SLOTS; i++) nonzero += slots[i] != 0;
    if ((body = body_bytes(t, picks.at, n)) == NULL || (reasons = PyTuple_New(nonzero)) == NULL) goto done;
    for (Py_ssize_t i = 0, k = 0; i < N_SLOTS; i++) {
        if (!slots[i]) continue;
        PyObject *pair = Py_BuildValue("(nK)", i, (unsigned long long)slots[i]);
        if (pair == NULL) goto done;
        PyTuple_SET_ITEM(reasons, k++, pair);
    }
    shadow = has_consent ? request_shadow(t, picks.at, n, granted) : PyTuple_New(0);
    if (shadow == NULL) goto done;
    result = PyTuple_Pack(3, body, reasons, shadow);
done:
    Py_XDECREF(body);
    Py_XDECREF(reasons);
    Py_XDECREF(shadow);
    picks_free(&picks);
    return result;
}
