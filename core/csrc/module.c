/* consent_core._native: the optional C accelerator of the compiled decision; pure computation.
 *
 * Owns the module and its method table:
 *   decide_batch(table, data) -> bytes | None
 *       an encoded DecideBatchRequest -> the encoded DecideBatchResponse, byte-identical to the
 *       server's Python path, or None for anything outside the plain case it handles (then the
 *       caller decides the whole batch in Python, exactly as without this module);
 *   decide_batch_counted(table, data) -> (body, entries, counts, shadow) | None
 *       the same, plus what the server's metrics count of the batch: decisions by reason and
 *       outcome, and shadow would-block counts, as consent_core's explained decisions reason them;
 *   decide_request(table, data) -> bytes | None, decide_request_counted(table, data)
 *       -> (body, reasons, shadow) | None
 *       the same for one encoded DecideRequest (a Decide call, a DecideStream message; data must
 *       be bytes, called per message through METH_FASTCALL): its encoded DecideResponse, and
 *       (counted) its decisions as a metrics Tally holds them, only the nonzero ones;
 *   split(need, unknown_need, granted, destinations, strict) -> (allowed, blocked) | None
 *       consent_core.split's pass over Python str ids;
 *   granted(bits, preferences, strict) -> int | None
 *       a consent dict's granted mask;
 *   many(requests, request_type, bits, need, unknown_need, max_destinations, max_destination_id_bytes,
 *        policy, decided, row, one) -> list
 *       the embedded decide_many's loop over Request objects (many.c).
 * What it must never do is in native.h.
 */
#include "native.h"

static PyMethodDef methods[] = {
    {"granted", cc_granted, METH_VARARGS,
     "granted(bits, preferences, strict) -> the granted mask, None (strict: an odd entry), or -1 (not ours)."},
    {"decide_batch", cc_decide_batch, METH_VARARGS,
     "decide_batch(table, data) -> the encoded DecideBatchResponse, or None outside the plain case."},
    {"decide_batch_counted", cc_decide_batch_counted, METH_VARARGS,
     "decide_batch_counted(table, data) -> (body, entries, counts by reason * 2 + allowed, shadow), or None."},
    {"decide_request", (PyCFunction)(void (*)(void))cc_decide_request, METH_FASTCALL,
     "decide_request(table, data) -> the encoded DecideResponse, or None outside the plain case."},
    {"decide_request_counted", (PyCFunction)(void (*)(void))cc_decide_request_counted, METH_FASTCALL,
     "decide_request_counted(table, data) -> (body, reasons as (slot, count), shadow), or None."},
    {"split", cc_split, METH_VARARGS,
     "split(need, unknown_need, granted, destinations, strict) -> (allowed, blocked), or None."},
    {"many", cc_many, METH_VARARGS,
     "many(requests, request_type, bits, need, unknown_need, max_destinations, max_destination_id_bytes, policy, "
     "decided, row, one) -> the results."},
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
