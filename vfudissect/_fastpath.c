/* vfudissect._fastpath: the compiled twins of two pure-Python hot paths, same results byte for byte.
 *
 *   scan_messages   capture/reader.py: a run of the writer's plain message records (one pcapng EPB each, the
 *                   fixed exported-PDU prefix, a whole VFUC MSG record without fds) -> MessageIn events
 *   pack_message    capture/writer.py: one such record, EPB and all, in one allocation
 *
 * Everything else (other blocks, fds, fragments, damage) stays with the Python code, which these functions hand
 * back to by stopping before the first record they do not take.  The pure path is the reference: with
 * VFUDISSECT_PURE=1 this module is not used, and the tests compare both on generated input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FASTPATH_VERSION 2 /* vfudissect/fastpath.py refuses a build of another version (a stale .so) */

#define EPB_TYPE 6u
#define EPB_OVER 28     /* block type, length, interface, ts high, ts low, caplen, origlen */
#define MAX_BLOCK (16u << 20)
#define VFUC_FIXED 32   /* "<4sBBHIBBHIIIHH" */
#define REC_MSG 0
#define FD_ENTRY_SIZE 24
#define VFUC_VERSION 1
#define VF_MORE_FRAGMENTS 0x02

static PyObject *k_ts, *k_conn, *k_dir, *k_data, *k_fds, *k_frame, *k_msg_len, *k_flags, *empty_tuple;

static inline uint16_t u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }

/* MessageIn as make_message_in() builds it: object.__new__ and its __dict__ set in one step. */
static PyObject *message_in(PyTypeObject *cls, double ts, PyObject *conn, PyObject *dir, PyObject *data,
                            PyObject *frame, PyObject *msg_len, PyObject *flags) {
    PyObject *d = PyDict_New(), *tsv = NULL, *m = NULL;
    if (d == NULL)
        return NULL;
    if ((tsv = PyFloat_FromDouble(ts)) == NULL)
        goto fail;
    if (PyDict_SetItem(d, k_ts, tsv) < 0 || PyDict_SetItem(d, k_conn, conn) < 0 || PyDict_SetItem(d, k_dir, dir) < 0
        || PyDict_SetItem(d, k_data, data) < 0 || PyDict_SetItem(d, k_fds, empty_tuple) < 0
        || PyDict_SetItem(d, k_frame, frame) < 0 || PyDict_SetItem(d, k_msg_len, msg_len) < 0
        || PyDict_SetItem(d, k_flags, flags) < 0)
        goto fail;
    if ((m = PyBaseObject_Type.tp_new(cls, empty_tuple, NULL)) == NULL)
        goto fail;
    if (PyObject_GenericSetDict(m, d, NULL) < 0)
        goto fail;
    Py_DECREF(tsv);
    Py_DECREF(d);
    return m;
fail:
    Py_XDECREF(m);
    Py_XDECREF(tsv);
    Py_DECREF(d);
    return NULL;
}

/* scan_messages(buf, pos, fast_ifaces, number, prefix_c2s, prefix_s2c, c2s, s2c, cls, limit) -> (events, pos, number)
 *
 * From ``pos`` in ``buf`` (a little-endian pcapng section), take whole EPBs on an interface marked 1 in
 * ``fast_ifaces`` (link type 252, nanosecond timestamps) whose record is a plain message of ours, as
 * reader.events_of's fast path takes them; stop before the first block that is anything else, or that is not
 * wholly in ``buf``, or after ``limit`` records.  ``number`` counts packet records (the frame number of the last one
 * taken). */
static PyObject *scan_messages(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer buf, ifs, p0, p1;
    Py_ssize_t pos, number, limit;
    PyObject *c2s, *s2c;
    PyTypeObject *cls;
    if (!PyArg_ParseTuple(args, "y*ny*ny*y*UUO!n", &buf, &pos, &ifs, &number, &p0, &p1, &c2s, &s2c, &PyType_Type,
                          &cls, &limit))
        return NULL;
    PyObject *out = PyList_New(0), *res = NULL;
    const unsigned char *b = buf.buf;
    const Py_ssize_t len = buf.len, plen = p0.len;
    if (out == NULL || p1.len != plen || pos < 0)
        goto done;
    for (Py_ssize_t taken = 0; taken < limit; taken++) {
        if (len - pos < 8)
            break;
        const unsigned char *blk = b + pos;
        uint32_t btype = u32(blk), blen = u32(blk + 4);
        if (btype != EPB_TYPE || blen < EPB_OVER + 4 || blen % 4 || blen > MAX_BLOCK || (Py_ssize_t)blen > len - pos)
            break;
        uint32_t if_id = u32(blk + 8), caplen = u32(blk + 20);
        if (if_id >= (uint32_t)ifs.len || !((const unsigned char *)ifs.buf)[if_id])
            break;
        Py_ssize_t dstart = pos + EPB_OVER, end = pos + blen - 4;
        if ((Py_ssize_t)caplen > end - dstart || (Py_ssize_t)caplen < plen + VFUC_FIXED)
            break;
        const unsigned char *data = b + dstart;
        PyObject *dir;
        if (memcmp(data, p0.buf, plen) == 0)
            dir = c2s;
        else if (memcmp(data, p1.buf, plen) == 0)
            dir = s2c;
        else
            break;
        const unsigned char *vh = data + plen;
        uint8_t rt = vh[5], flags = vh[13];
        uint16_t hdr_len = u16(vh + 6), n_fds = u16(vh + 14);
        uint32_t conn = u32(vh + 8), msg_len = u32(vh + 16), frag_off = u32(vh + 20);
        if (memcmp(vh, "VFUC", 4) != 0 || rt != REC_MSG || hdr_len != VFUC_FIXED || n_fds || frag_off
            || flags & VF_MORE_FRAGMENTS)
            break;
        uint64_t ticks = ((uint64_t)u32(blk + 12) << 32) | u32(blk + 16);
        Py_ssize_t pstart = plen + VFUC_FIXED, plen_payload = caplen - pstart;
        PyObject *payload = PyBytes_FromStringAndSize((const char *)data + pstart, plen_payload);
        PyObject *conn_o = PyLong_FromUnsignedLong(conn), *frame_o = PyLong_FromSsize_t(number + 1);
        PyObject *ml_o = PyLong_FromSsize_t(msg_len ? (Py_ssize_t)msg_len : plen_payload);
        PyObject *fl_o = PyLong_FromLong(flags), *ev = NULL;
        if (payload && conn_o && frame_o && ml_o && fl_o)
            ev = message_in(cls, (double)ticks / 1e9, conn_o, dir, payload, frame_o, ml_o, fl_o);
        Py_XDECREF(payload);
        Py_XDECREF(conn_o);
        Py_XDECREF(frame_o);
        Py_XDECREF(ml_o);
        Py_XDECREF(fl_o);
        if (ev == NULL || PyList_Append(out, ev) < 0) {
            Py_XDECREF(ev);
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(ev);
        number += 1;
        pos += blen;
    }
    res = Py_BuildValue("Nnn", out, pos, number);
    out = NULL;
done:
    Py_XDECREF(out);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ifs);
    PyBuffer_Release(&p0);
    PyBuffer_Release(&p1);
    if (res == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "scan_messages: prefixes of different lengths or a negative position");
    return res;
}

/* pack_message(ts_ns, conn, dir_code, flags, msg_len, seq, data, prefix, tail) -> bytes
 *
 * One EPB (interface 0) holding one VFUC MSG record without fds: ``prefix`` (the exported-PDU TLVs of its
 * direction), the fixed header, ``data`` zero-padded to 4, ``tail`` (the EPB options), the trailing length:
 * what writer.CaptureWriter._write_message_fast packs with three struct calls and a join. */
static PyObject *pack_message(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long ts_ns;
    unsigned long conn, msg_len, seq;
    unsigned int dcode, flags;
    Py_buffer data, prefix, tail;
    if (!PyArg_ParseTuple(args, "KkIIkky*y*y*", &ts_ns, &conn, &dcode, &flags, &msg_len, &seq, &data, &prefix,
                          &tail))
        return NULL;
    PyObject *res = NULL;
    if (conn > 0xFFFFFFFFul || msg_len > 0xFFFFFFFFul || seq > 0xFFFFFFFFul || dcode > 0xFF || flags > 0xFF) {
        PyErr_SetString(PyExc_OverflowError, "pack_message: a field does not fit its VFUC width");
        goto done;
    }
    Py_ssize_t reclen = prefix.len + VFUC_FIXED + data.len, pad = (4 - reclen % 4) % 4;
    Py_ssize_t total = EPB_OVER + reclen + pad + tail.len + 4;
    if (total > 0xFFFFFFFFll) {
        PyErr_SetString(PyExc_OverflowError, "pack_message: record too large");
        goto done;
    }
    res = PyBytes_FromStringAndSize(NULL, total);
    if (res == NULL)
        goto done;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(res);
    put32(p, EPB_TYPE);
    put32(p + 4, (uint32_t)total);
    put32(p + 8, 0);
    put32(p + 12, (uint32_t)(ts_ns >> 32));
    put32(p + 16, (uint32_t)ts_ns);
    put32(p + 20, (uint32_t)reclen);
    put32(p + 24, (uint32_t)reclen);
    p += EPB_OVER;
    memcpy(p, prefix.buf, prefix.len);
    p += prefix.len;
    memcpy(p, "VFUC", 4);
    p[4] = VFUC_VERSION;
    p[5] = REC_MSG;
    put16(p + 6, VFUC_FIXED);
    put32(p + 8, (uint32_t)conn);
    p[12] = (unsigned char)dcode;
    p[13] = (unsigned char)flags;
    put16(p + 14, 0);  /* no fds */
    put32(p + 16, (uint32_t)msg_len);
    put32(p + 20, 0);  /* whole: no fragment offset */
    put32(p + 24, (uint32_t)seq);
    put16(p + 28, FD_ENTRY_SIZE);
    put16(p + 30, 0);
    p += VFUC_FIXED;
    memcpy(p, data.buf, data.len);
    p += data.len;
    memset(p, 0, pad);
    p += pad;
    memcpy(p, tail.buf, tail.len);
    p += tail.len;
    put32(p, (uint32_t)total);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&prefix);
    PyBuffer_Release(&tail);
    return res;
}

static PyMethodDef methods[] = {
    {"scan_messages", scan_messages, METH_VARARGS, "A run of plain message records of a pcapng buffer as events."},
    {"pack_message", pack_message, METH_VARARGS, "One plain message record, as a whole pcapng EPB."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpath", "Compiled twins of the capture reader's and writer's hot paths.", -1, methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (!(k_ts = PyUnicode_InternFromString("ts")) || !(k_conn = PyUnicode_InternFromString("conn"))
        || !(k_dir = PyUnicode_InternFromString("dir")) || !(k_data = PyUnicode_InternFromString("data"))
        || !(k_fds = PyUnicode_InternFromString("fds")) || !(k_frame = PyUnicode_InternFromString("frame"))
        || !(k_msg_len = PyUnicode_InternFromString("msg_len")) || !(k_flags = PyUnicode_InternFromString("flags"))
        || !(empty_tuple = PyTuple_New(0)))
        return NULL;
    PyObject *m = PyModule_Create(&module);
    /* the constants it was built with: fastpath.py checks them against spec.py before using this module */
    if (m != NULL && (PyModule_AddIntConstant(m, "VERSION", FASTPATH_VERSION) < 0
                      || PyModule_AddIntConstant(m, "VFUC_FIXED_SIZE", VFUC_FIXED) < 0
                      || PyModule_AddIntConstant(m, "VF_MORE_FRAGMENTS", VF_MORE_FRAGMENTS) < 0
                      || PyModule_AddIntConstant(m, "REC_MSG", REC_MSG) < 0
                      || PyModule_AddIntConstant(m, "MAX_BLOCK", MAX_BLOCK) < 0
                      || PyModule_AddIntConstant(m, "FD_ENTRY_SIZE", FD_ENTRY_SIZE) < 0
                      || PyModule_AddIntConstant(m, "VFUC_VERSION", VFUC_VERSION) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
