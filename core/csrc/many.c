/* many(): the embedded decide_many's loop over Request objects (consent_client.embedded), in C.
 *
 * Owns that loop's plain case only: an exact Request with no event, explain False, a consent that
 * is None or an exact dict of exact str keys and bool values, and destinations as an exact tuple.
 * For such an entry it reduces the consent to its granted mask (objects.c's consent_mask; the same
 * consent object in a run is reduced once), finds the one result shared by every entry with that
 * mask and that destination list object, and on a miss decides the list from a need row computed
 * once per list object and call (here for ids of printable ASCII, which it validates and resolves
 * as the pure pass does; else by the caller's `row` callback), calling the caller's `decided` to
 * build the result. Every other
 * entry (events, explain, odd consents, invalid lists, subclasses) is handed to the caller's `one`
 * callback, whose answer is the entry's, unchanged. So the pure loop stays the reference: this
 * file only decides what it can decide exactly as that loop does.
 *
 * Never keeps anything after the call, never releases the GIL. The callbacks are the caller's
 * Python code and may raise (then the exception propagates, as from the pure loop) or run code
 * that mutates the request list: every object read is held by a strong reference for as long as
 * it is used, and the list's size is re-read before each entry. */
#include "native.h"

#if PY_VERSION_HEX >= 0x030C0000
#define MEMBER_OBJECT_EX Py_T_OBJECT_EX
#else
#include <structmember.h>
#define MEMBER_OBJECT_EX T_OBJECT_EX
#endif

/* -- per-call tables: list object -> need row, (list object, mask) -> shared result ------- */

typedef struct {
    PyObject *list; /* NULL: empty slot; else a strong reference (its id must not be reused meanwhile) */
    PyObject *ids;  /* strong: the ids the answer names (the list itself, or the known ids for ()) */
    Py_ssize_t row; /* offset of its needs in Rows.needs; -1: invalid or not ours (the `one` callback) */
} ListSlot;

typedef struct {
    PyObject *list;   /* NULL: empty slot; borrowed from its ListSlot */
    uint64_t mask;
    int none;         /* no consent object: the mask is unused */
    PyObject *result; /* strong */
} ResultSlot;

typedef struct {
    ListSlot *lists;
    size_t lists_mask, n_lists;
    ResultSlot *results;
    size_t results_mask, n_results;
    int64_t *needs; /* every list's row, end to end */
    size_t n_needs, cap_needs;
} Tables;

static inline size_t mix(uint64_t x) { /* splitmix64's finaliser: pointers differ in their high bits */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (size_t)x;
}

static inline size_t list_hash(PyObject *list) { return mix((uint64_t)(uintptr_t)list); }

static inline size_t result_hash(PyObject *list, uint64_t mask, int none) {
    return mix((uint64_t)(uintptr_t)list ^ (mask * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)none);
}

static ListSlot *list_find(const Tables *t, PyObject *list) {
    size_t i = list_hash(list) & t->lists_mask;
    while (t->lists[i].list != NULL && t->lists[i].list != list) i = (i + 1) & t->lists_mask;
    return &t->lists[i];
}

static ResultSlot *result_find(const Tables *t, PyObject *list, uint64_t mask, int none) {
    size_t i = result_hash(list, mask, none) & t->results_mask;
    for (;;) {
        ResultSlot *s = &t->results[i];
        if (s->list == NULL || (s->list == list && s->mask == mask && s->none == none)) return s;
        i = (i + 1) & t->results_mask;
    }
}

/* Doubles a table once it is half full, so a probe always ends at an empty slot. */
static int lists_grow(Tables *t) {
    if ((t->n_lists + 1) * 2 <= t->lists_mask + 1) return 0;
    ListSlot *old = t->lists;
    size_t old_cap = t->lists_mask + 1, cap = old_cap * 2;
    t->lists = PyMem_Calloc(cap, sizeof(ListSlot));
    if (t->lists == NULL) {
        t->lists = old;
        PyErr_NoMemory();
        return FAIL;
    }
    t->lists_mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].list != NULL) *list_find(t, old[i].list) = old[i];
    PyMem_Free(old);
    return 0;
}

static int results_grow(Tables *t) {
    if ((t->n_results + 1) * 2 <= t->results_mask + 1) return 0;
    ResultSlot *old = t->results;
    size_t old_cap = t->results_mask + 1, cap = old_cap * 2;
    t->results = PyMem_Calloc(cap, sizeof(ResultSlot));
    if (t->results == NULL) {
        t->results = old;
        PyErr_NoMemory();
        return FAIL;
    }
    t->results_mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].list != NULL) *result_find(t, old[i].list, old[i].mask, old[i].none) = old[i];
    PyMem_Free(old);
    return 0;
}

static int needs_reserve(Tables *t, size_t more) {
    if (t->cap_needs - t->n_needs >= more) return 0;
    size_t cap = t->cap_needs ? t->cap_needs : 256;
    while (cap - t->n_needs < more) {
        if (cap > PY_SSIZE_T_MAX / (2 * sizeof(int64_t))) {
            PyErr_NoMemory();
            return FAIL;
        }
        cap *= 2;
    }
    int64_t *n = PyMem_Realloc(t->needs, cap * sizeof(int64_t));
    if (n == NULL) {
        PyErr_NoMemory();
        return FAIL;
    }
    t->needs = n;
    t->cap_needs = cap;
    return 0;
}

static void tables_free(Tables *t) {
    if (t->results != NULL)
        for (size_t i = 0; i <= t->results_mask; i++) Py_XDECREF(t->results[i].result);
    if (t->lists != NULL)
        for (size_t i = 0; i <= t->lists_mask; i++) {
            Py_XDECREF(t->lists[i].list);
            Py_XDECREF(t->lists[i].ids);
        }
    PyMem_Free(t->results);
    PyMem_Free(t->lists);
    PyMem_Free(t->needs);
}

/* -- a list's need row ------------------------------------------------------------------- */

/* The call's constants. */
typedef struct {
    PyObject *bits; /* dict: enabled category id -> bit */
    PyObject *need; /* dict: known id -> need (consent_core.split's encoding) */
    long long unknown_need;
    Py_ssize_t max_destinations, max_id_bytes;
    PyObject *policy, *decided, *row, *one;
} Call;

/* An int need as int64; 0 and *out, DOUBT when it is not an exact int in 64 bits, FAIL. */
static int need_value(PyObject *v, int64_t *out) {
    if (!PyLong_CheckExact(v)) return DOUBT;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow) return DOUBT;
    if (n == -1 && PyErr_Occurred()) return FAIL;
    *out = n;
    return 0;
}

/* The need of request id `d` into *out, as consent_core.split's pass resolves it (the id itself,
 * else the id before its first '/', else an unknown id's): 0; DOUBT when the id is not one this
 * file can prove valid (an exact str of printable ASCII, 1..max_id_bytes long, not starting with
 * '/': destination_problem's rules on that alphabet); FAIL. */
static int id_need(const Call *c, PyObject *d, int64_t *out) {
    if (!PyUnicode_CheckExact(d)) return DOUBT;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(d) < 0) return FAIL; /* a legacy string (deprecated APIs) out of memory */
#endif
    if (!PyUnicode_IS_ASCII(d)) return DOUBT;
    const uint8_t *s = PyUnicode_1BYTE_DATA(d);
    Py_ssize_t len = PyUnicode_GET_LENGTH(d);
    if (len == 0 || len > c->max_id_bytes || s[0] == '/' || !printable_ascii(s, len)) return DOUBT;
    PyObject *v = PyDict_GetItemWithError(c->need, d); /* borrowed; exact str keys run no Python code */
    if (v == NULL && PyErr_Occurred()) return FAIL;
    const uint8_t *slash = v == NULL ? memchr(s, '/', (size_t)len) : NULL;
    if (slash != NULL) { /* `<destination>/<instance>` decides as <destination> */
        PyObject *base = PyUnicode_FromStringAndSize((const char *)s, slash - s);
        if (base == NULL) return FAIL;
        v = PyDict_GetItemWithError(c->need, base); /* the dict keeps v alive */
        Py_DECREF(base);
        if (v == NULL && PyErr_Occurred()) return FAIL;
    }
    if (v == NULL) {
        *out = c->unknown_need;
        return 0;
    }
    return need_value(v, out);
}

/* Fills `slot` (empty, for `list`): its ids and needs, or row -1 when the caller's `row` says the
 * list is invalid (or answers what this file does not read). 0 or FAIL. */
static int list_row(const Call *c, Tables *t, ListSlot *slot, PyObject *list) {
    Py_ssize_t n = PyTuple_GET_SIZE(list);
    PyObject *ids = list;
    PyObject *got = NULL; /* the `row` callback's (ids, needs) */
    if (needs_reserve(t, (size_t)n) < 0) return FAIL;
    int ours = n > 0 && n <= c->max_destinations;
    for (Py_ssize_t i = 0; ours && i < n; i++) {
        int rc = id_need(c, PyTuple_GET_ITEM(list, i), &t->needs[t->n_needs + (size_t)i]);
        if (rc == FAIL) return FAIL;
        ours = rc == 0;
    }
    if (!ours) { /* the caller validates and resolves it (non-ASCII or invalid ids, too many, ()) */
        got = PyObject_CallOneArg(c->row, list);
        if (got == NULL) return FAIL;
        PyObject *needs;
        if (got == Py_None || !PyTuple_CheckExact(got) || PyTuple_GET_SIZE(got) != 2 ||
            !PyTuple_CheckExact(ids = PyTuple_GET_ITEM(got, 0)) ||
            !PyTuple_CheckExact(needs = PyTuple_GET_ITEM(got, 1)) ||
            (n = PyTuple_GET_SIZE(ids)) != PyTuple_GET_SIZE(needs))
            goto not_ours;
        if (needs_reserve(t, (size_t)n) < 0) goto fail;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(ids, i))) goto not_ours;
            int rc = need_value(PyTuple_GET_ITEM(needs, i), &t->needs[t->n_needs + (size_t)i]);
            if (rc == FAIL) goto fail;
            if (rc == DOUBT) goto not_ours;
        }
    }
    slot->list = Py_NewRef(list);
    slot->ids = Py_NewRef(ids);
    slot->row = (Py_ssize_t)t->n_needs;
    t->n_needs += (size_t)n;
    t->n_lists++;
    Py_XDECREF(got);
    return 0;
not_ours:
    slot->list = Py_NewRef(list);
    slot->ids = NULL;
    slot->row = -1;
    t->n_lists++;
    Py_XDECREF(got);
    return 0;
fail:
    Py_XDECREF(got);
    return FAIL;
}

/* -- one plain entry ---------------------------------------------------------------------- */

/* The allowed and blocked ids of `slot`'s list under `mask` (none: no consent object, nothing
 * blocked), as `decided` builds its result: a new reference, or NULL with an exception set. */
static PyObject *decide_list(const Call *c, const Tables *t, const ListSlot *slot, uint64_t mask, int none) {
    PyObject *ids = slot->ids, *al = NULL, *bl = NULL, *empty = NULL, *r = NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(ids), na = 0, nb = 0;
    const int64_t *need = t->needs + slot->row;
    if (!none)
        for (Py_ssize_t i = 0; i < n; i++) nb += blocks(need[i], mask);
    if (nb == 0 || nb == n) { /* one side is every id: the tuple itself */
        empty = PyTuple_New(0);
        if (empty == NULL) return NULL;
        PyObject *args[3] = {nb ? empty : ids, nb ? ids : empty, c->policy};
        r = PyObject_Vectorcall(c->decided, args, 3, NULL);
        Py_DECREF(empty);
        return r;
    }
    al = PyTuple_New(n - nb);
    bl = PyTuple_New(nb);
    if (al == NULL || bl == NULL) goto done;
    for (Py_ssize_t i = 0, ib = 0; i < n; i++) {
        PyObject *d = Py_NewRef(PyTuple_GET_ITEM(ids, i));
        if (blocks(need[i], mask))
            PyTuple_SET_ITEM(bl, ib++, d);
        else
            PyTuple_SET_ITEM(al, na++, d);
    }
    {
        PyObject *args[3] = {al, bl, c->policy};
        r = PyObject_Vectorcall(c->decided, args, 3, NULL);
    }
done:
    Py_XDECREF(al);
    Py_XDECREF(bl);
    return r;
}

/* -- a Request's fields --------------------------------------------------------------------- */

#define N_FIELDS 4
static const char *const FIELD_NAMES[N_FIELDS] = {"event", "explain", "consent", "destinations"};

/* How this call reads an exact Request's fields: straight from its slots when the type's are plain
 * object slots (a frozen slots dataclass's member descriptors) read by the generic getattr, as
 * PyObject_GetAttr would read them, minus the lookups; else through PyObject_GetAttr by name. */
typedef struct {
    PyObject *names[N_FIELDS]; /* strong */
    Py_ssize_t offsets[N_FIELDS]; /* all > 0, or the first one 0: read by name */
} Fields;

static int fields_init(Fields *f, PyTypeObject *type) {
    int plain = type->tp_getattro == PyObject_GenericGetAttr && type->tp_dict != NULL;
    for (int k = 0; k < N_FIELDS; k++) {
        if ((f->names[k] = PyUnicode_InternFromString(FIELD_NAMES[k])) == NULL) return FAIL;
        f->offsets[k] = 0;
        if (!plain) continue;
        PyObject *d = PyDict_GetItemWithError(type->tp_dict, f->names[k]); /* borrowed; exact str key */
        if (d == NULL && PyErr_Occurred()) return FAIL;
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) || PyDescr_TYPE(d) != type) {
            plain = 0;
            continue;
        }
        const PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != MEMBER_OBJECT_EX || m->offset <= 0 || (size_t)m->offset + sizeof(PyObject *) > (size_t)type->tp_basicsize)
            plain = 0;
        else
            f->offsets[k] = m->offset;
    }
    if (!plain) f->offsets[0] = 0;
    return 0;
}

/* Field k of `req` (a new reference), NULL and an exception otherwise. */
static inline PyObject *field(const Fields *f, PyObject *req, int k) {
    if (f->offsets[0] == 0) return PyObject_GetAttr(req, f->names[k]);
    PyObject *v = *(PyObject **)((char *)req + f->offsets[k]);
    if (v == NULL) {
        PyErr_SetObject(PyExc_AttributeError, f->names[k]); /* a slot never set */
        return NULL;
    }
    return Py_NewRef(v);
}

/* The answer of request `req` (exact type), or NULL for `one` to give it (not the plain case),
 * or NULL with an exception set (*failed). A new reference. */
static PyObject *plain_entry(const Call *c, Tables *t, PyObject *req, const Fields *f, PyObject **last,
                             uint64_t *last_mask, int *failed) {
    PyObject *event = NULL, *explain = NULL, *consent = NULL, *list = NULL, *r = NULL;
    uint64_t mask = 0;
    int none = 0;
    if ((event = field(f, req, 0)) == NULL || (explain = field(f, req, 1)) == NULL ||
        (consent = field(f, req, 2)) == NULL || (list = field(f, req, 3)) == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) /* a field never set: `one` raises as the pure loop */
            PyErr_Clear();
        else
            *failed = 1;
        goto done;
    }
    if (event != Py_None || explain != Py_False || !PyTuple_CheckExact(list)) goto done; /* `one`'s */
    if (consent == Py_None) {
        none = 1;
    } else if (consent == *last) { /* one consent object for many events */
        mask = *last_mask;
    } else {
        if (!PyDict_CheckExact(consent)) goto done;
        int rc = consent_mask(c->bits, consent, 1, &mask);
        if (rc == FAIL) {
            *failed = 1;
            goto done;
        }
        if (rc != GRANTED_OK) goto done; /* odd: `one` says what, as the sidecar would */
        Py_SETREF(*last, Py_NewRef(consent));
        *last_mask = mask;
    }
    ResultSlot *hit = result_find(t, list, mask, none);
    if (hit->list != NULL) {
        r = Py_NewRef(hit->result);
        goto done;
    }
    ListSlot *ls = list_find(t, list);
    if (ls->list == NULL) {
        if (list_row(c, t, ls, list) < 0 || lists_grow(t) < 0) {
            *failed = 1;
            goto done;
        }
        ls = list_find(t, list); /* moved when the table grew */
    }
    if (ls->row < 0) goto done; /* invalid: `one` reports it under this entry's own index */
    r = decide_list(c, t, ls, mask, none);
    if (r == NULL) {
        *failed = 1;
        goto done;
    }
    hit = result_find(t, list, mask, none); /* list_row ran Python code: find the slot afresh */
    if (hit->list == NULL) {
        hit->list = ls->list;
        hit->mask = mask;
        hit->none = none;
        hit->result = Py_NewRef(r);
        t->n_results++;
        if (results_grow(t) < 0) {
            Py_CLEAR(r);
            *failed = 1;
        }
    }
done:
    Py_XDECREF(event);
    Py_XDECREF(explain);
    Py_XDECREF(consent);
    Py_XDECREF(list);
    return r;
}

/* many(requests: list, request_type, bits: dict[str, int], need: dict[str, int], unknown_need,
 *      max_destinations, max_destination_id_bytes, policy, decided, row, one) -> list
 * decided(allowed, blocked, policy) -> result; row(list) -> (ids, needs) | None (invalid);
 * one(i, request) -> the answer of an entry outside the plain case. */
PyObject *cc_many(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *reqs, *type;
    Call c;
    if (!PyArg_ParseTuple(args, "O!O!O!O!LnnOOOO", &PyList_Type, &reqs, &PyType_Type, &type, &PyDict_Type, &c.bits,
                          &PyDict_Type, &c.need, &c.unknown_need, &c.max_destinations, &c.max_id_bytes, &c.policy,
                          &c.decided, &c.row, &c.one))
        return NULL;
    Fields f = {{NULL}, {0}};
    PyObject *out = NULL, *last = Py_NewRef(Py_None);
    uint64_t last_mask = 0;
    Tables t = {0};
    if (fields_init(&f, (PyTypeObject *)type) < 0) goto fail;
    t.lists = PyMem_Calloc(64, sizeof(ListSlot));
    t.results = PyMem_Calloc(64, sizeof(ResultSlot));
    if (t.lists == NULL || t.results == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    t.lists_mask = t.results_mask = 63;
    out = PyList_New(0);
    if (out == NULL) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(reqs); i++) { /* the size re-read: a callback may change it */
        PyObject *req = Py_NewRef(PyList_GET_ITEM(reqs, i));
        PyObject *r = NULL;
        int failed = 0;
        if (Py_IS_TYPE(req, (PyTypeObject *)type))
            r = plain_entry(&c, &t, req, &f, &last, &last_mask, &failed);
        if (r == NULL && !failed) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (index != NULL) {
                PyObject *a[2] = {index, req};
                r = PyObject_Vectorcall(c.one, a, 2, NULL);
                Py_DECREF(index);
            }
        }
        Py_DECREF(req);
        if (r == NULL) goto fail;
        int rc = PyList_Append(out, r);
        Py_DECREF(r);
        if (rc < 0) goto fail;
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    for (int k = 0; k < N_FIELDS; k++) Py_XDECREF(f.names[k]);
    Py_DECREF(last);
    tables_free(&t);
    return out;
}
