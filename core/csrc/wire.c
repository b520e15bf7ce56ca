/* Decisions from request bytes to response bytes, byte-identical to the server's Python path:
 * decide_batch / decide_batch_counted (the plain DecideBatch, with (counted) what its metrics count) and
 * decide_request / decide_request_counted (one Decide call or DecideStream message, the same way). */
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

/* One DecideRequest -> its DecideResponse appended to `o`, framed as a batch's `responses` field
 * when `framed`; 0, DOUBT or FAIL. With `counts` (else NULL), its decisions are added there (count_entry). */
static int decide_entry(const Table *t, const uint8_t *p, const uint8_t *end, Picks *ps, Out *o,
                        Counts *counts, int framed) {
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
    if (framed) {
        o->buf[o->len++] = 0x0A;
        put_varint(o, body);
    }
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

/* A run's result, its buffers freed: the response bytes for 0, None for DOUBT, NULL (an exception
 * set) for FAIL. */
static PyObject *finish(int rc, Out *o, Picks *picks) {
    PyObject *result = NULL;
    if (rc == 0) {
        result = PyBytes_FromStringAndSize(o->buf, (Py_ssize_t)o->len);
    } else if (rc == DOUBT) {
        result = Py_NewRef(Py_None);
    }
    PyMem_Free(o->buf);
    PyMem_Free(picks->at);
    return result;
}

/* The batch -> its response bytes (PyBytes), Py_None outside the plain case, NULL with an exception
 * set; with `counts` (N_SLOTS zeroed), the decisions of every entry added there and the number of
 * entries into *n_entries. */
static PyObject *run_batch(Table *t, Py_buffer *view_, Counts *counts, Py_ssize_t *n_entries) {
    Py_buffer view = *view_;
    const uint8_t *p = view.buf, *end = p + view.len;
    Picks picks = {NULL, 0};
    Out o = {NULL, 0, 0};
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
        rc = decide_entry(t, e, e + elen, &picks, &o, counts, 1);
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
    *n_entries = entries;
    return finish(rc, &o, &picks);
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

/* -- decide_request: one Decide or DecideStream message ---------------------------------- */

/* One encoded DecideRequest -> its DecideResponse (PyBytes), Py_None outside the plain case, NULL
 * with an exception set; with `counts`, its decisions added there. */
static PyObject *run_request(const Table *t, const Py_buffer *view, Counts *counts) {
    const uint8_t *p = view->buf;
    Picks picks = {NULL, 0};
    Out o = {NULL, 0, 0};
    return finish(decide_entry(t, p, p + view->len, &picks, &o, counts, 0), &o, &picks);
}

PyObject *cc_decide_request(PyObject *Py_UNUSED(self), PyObject *args) {
    Table *t;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "O!y*", &TableType, &t, &view)) return NULL;
    PyObject *result = run_request(t, &view, NULL);
    PyBuffer_Release(&view);
    return result;
}

/* The counted call over a batch (`batch`) or one request: parses (table, data), decides with counts,
 * and builds what decide_batch_counted / decide_request_counted return. */
static PyObject *counted(PyObject *args, int batch) {
    Table *t;
    Py_buffer view;
    Py_ssize_t entries = 1;
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
    PyObject *body = batch ? run_batch(t, &view, &counts, &entries) : run_request(t, &view, &counts);
    PyObject *tally = NULL, *shadow = NULL;
    PyBuffer_Release(&view);
    if (body == NULL || body == Py_None) goto done;
    Py_ssize_t n = 0; /* a batch: every slot; a request: the nonzero ones, as (slot, count) pairs */
    for (int i = 0; i < N_SLOTS; i++) n += batch || slots[i] != 0;
    tally = PyTuple_New(n);
    if (tally == NULL) goto fail;
    for (Py_ssize_t i = 0, k = 0; i < N_SLOTS; i++) {
        if (!batch && !slots[i]) continue;
        PyObject *c = batch ? PyLong_FromUnsignedLongLong(slots[i])
                            : Py_BuildValue("(nK)", i, (unsigned long long)slots[i]);
        if (c == NULL) goto fail;
        PyTuple_SET_ITEM(tally, k++, c);
    }
    shadow = counts.shadow == NULL ? PyTuple_New(0) : shadow_tuple(t, counts.shadow);
    if (shadow == NULL) goto fail;
    PyMem_Free(counts.shadow);
    return batch ? Py_BuildValue("(NnNN)", body, entries, tally, shadow) : Py_BuildValue("(NNN)", body, tally, shadow);
fail:
    Py_XDECREF(tally);
    Py_CLEAR(body);
done:
    PyMem_Free(counts.shadow);
    return body;
}

/* decide_batch_counted(table, data) -> (body, entries, counts, shadow) | None: decide_batch, plus
 * the number of entries, a tuple of N_SLOTS decision counts (slot = reason * 2 + allowed) and the
 * shadow would-block counts as (category, destination, count) tuples. None also when the table
 * was built unable to label shadow counts. */
PyObject *cc_decide_batch_counted(PyObject *Py_UNUSED(self), PyObject *args) { return counted(args, 1); }

/* decide_request_counted(table, data) -> (body, reasons, shadow) | None: decide_request, plus its
 * decisions as consent_sidecar.observe.metrics.Tally holds them: reasons as (slot, count) pairs
 * for the nonzero slots (slot = reason * 2 + allowed), shadow as (category, destination, count). */
PyObject *cc_decide_request_counted(PyObject *Py_UNUSED(self), PyObject *args) { return counted(args, 0); }
