/* Passes over Python objects: split (consent_core.split's allowed/blocked pass over str ids) and
 * granted (a consent dict's granted mask, `consent_mask`, which many.c shares). Only exact str
 * keys are read in C, whose hash and equality run no Python code; anything else is left to the
 * pure pass. */
#include "native.h"

/* -- split over Python objects ------------------------------------------------------------ */

/* split(need: dict[str, int], unknown_need, granted: int, destinations: tuple[str, ...], strict)
 * -> (allowed, blocked) in request order, or None for an id that is not an exact str, a mask or
 * need over 64 bits, or (strict) any id the table does not hold (the caller's pass then resolves
 * and validates it). */
PyObject *cc_split(PyObject *Py_UNUSED(self), PyObject *args) {
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

/* A consent dict's granted mask into *out: GRANTED_OK, GRANTED_ODD (strict: a value that is not
 * a bool), GRANTED_NOT_OURS (a key that is not an exact str, whose hash or equality could run
 * Python code, or a bit that is not an int under 2**64: the caller's pure loop answers) or FAIL.
 * Strict false ignores values other than True, as Index.granted_mask does. */
int consent_mask(PyObject *bits, PyObject *prefs, int strict, uint64_t *out) {
    uint64_t g = 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(prefs, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) return GRANTED_NOT_OURS;
        if (v == Py_True) {
            PyObject *b = PyDict_GetItemWithError(bits, k); /* borrowed; exact str keys run no Python code */
            if (b == NULL) {
                if (PyErr_Occurred()) return FAIL;
                continue;
            }
            if (!PyLong_CheckExact(b)) return GRANTED_NOT_OURS;
            unsigned long long bit = PyLong_AsUnsignedLongLong(b);
            if (bit == (unsigned long long)-1 && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return FAIL;
                PyErr_Clear();
                return GRANTED_NOT_OURS;
            }
            g |= bit;
        } else if (strict && v != Py_False) {
            return GRANTED_ODD;
        }
    }
    *out = g;
    return GRANTED_OK;
}

/* granted(bits: dict[str, int], preferences: dict, strict) -> int | None: Index.granted_mask
 * (strict false: values other than True ignored) or granted_mask_strict (strict: None when a
 * value is not a bool or an id not an exact str). -1 when it is not this function's to answer
 * (consent_mask's GRANTED_NOT_OURS): the caller then takes its pure loop. */
PyObject *cc_granted(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *bits, *prefs;
    int strict;
    if (!PyArg_ParseTuple(args, "O!O!p", &PyDict_Type, &bits, &PyDict_Type, &prefs, &strict)) return NULL;
    uint64_t g;
    switch (consent_mask(bits, prefs, strict, &g)) {
    case GRANTED_OK:
        return PyLong_FromUnsignedLongLong(g);
    case GRANTED_ODD:
        Py_RETURN_NONE;
    case GRANTED_NOT_OURS:
        return PyLong_FromLong(-1);
    default:
        return NULL;
    }
}
