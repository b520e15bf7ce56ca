/* consent_core._native.Table: one snapshot's compiled decision table (immutable), built once per
 * compiled Index by consent_core.native from the index's own maps. */
#include "native.h"

static int map_init(Map *m, Py_ssize_t n) {
    size_t cap = 8;
    while (cap < (size_t)n * 2 + 1) cap <<= 1;
    m->slots = PyMem_Calloc(cap, sizeof(Slot));
    if (m->slots == NULL) return -1;
    m->mask = cap - 1;
    return 0;
}

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

PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "consent_core._native.Table",
    .tp_basicsize = sizeof(Table),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One snapshot's compiled decision table for decide_batch (immutable).",
    .tp_new = table_new,
};
