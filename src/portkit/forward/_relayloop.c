/* portkit.forward._relayloop: one direction of a threaded splice relay, in C.
 *
 * A relay thread of the splice engine (_splice.py) moves one direction of a bulk connection:
 * splice(2) src socket -> pipe, then pipe -> dst socket until the pipe is empty, repeat. In
 * Python every splice takes and drops the GIL, which sixteen relay threads and the loop
 * thread then fight over. `relay()` runs that same loop with the GIL released for the whole
 * call and returns to Python only when Python has something to decide:
 *
 *   BUDGET   max_bytes written to dst or max_seconds spent, with the pipe empty: Python
 *            updates the byte counters, looks whether the connection is closing, calls again;
 *   IDLE     src had nothing for SO_RCVTIMEO (the socket's receive timeout), pipe empty:
 *            Python gives the pipe back to the pool and waits in poll();
 *   EOF      src said EOF (or was shut down for reading to wake us), pipe empty;
 *   BLOCKED  dst took nothing for SO_SNDTIMEO (a slow far reader), bytes still in the pipe:
 *            Python looks whether the connection is closing, calls again;
 *   SRC_ERROR / DST_ERROR  the splice from src / to dst failed (a reset): errno is returned.
 *
 * So the Python side keeps every decision (state machine, counters, idle timeout, pipe pool)
 * and this module only loops. The sockets must be blocking with SO_RCVTIMEO/SO_SNDTIMEO set,
 * the pipe blocking (a non-blocking pipe would make the socket side of splice non-blocking).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first; its pyconfig.h defines _GNU_SOURCE, which splice() needs */

#include <errno.h>
#include <fcntl.h>
#include <time.h>

enum status { BUDGET = 0, IDLE = 1, EOF_ = 2, BLOCKED = 3, SRC_ERROR = 4, DST_ERROR = 5 };

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

PyDoc_STRVAR(relay_doc,
"relay(src, dst, pipe_r, pipe_w, pending, chunk, max_bytes, max_seconds, /)\n"
"    -> (status, read, written, errno)\n\n"
"Splice src -> pipe (up to chunk bytes at a time) and pipe -> dst, with `pending` bytes\n"
"already in the pipe, until a status of BUDGET, IDLE, EOF, BLOCKED, SRC_ERROR or DST_ERROR\n"
"(see _relayloop.c). `read` and `written` are this call's bytes from src and to dst; bytes\n"
"left in the pipe afterwards = pending + read - written. The GIL is released throughout.");

static PyObject *
py_relay(PyObject *self, PyObject *args)
{
    int src, dst, pipe_r, pipe_w;
    long long pending, chunk, max_bytes;
    double max_seconds;
    if (!PyArg_ParseTuple(args, "iiiiLLLd:relay", &src, &dst, &pipe_r, &pipe_w, &pending, &chunk,
                          &max_bytes, &max_seconds)) {
        return NULL;
    }
    if (src < 0 || dst < 0 || pipe_r < 0 || pipe_w < 0) {
        PyErr_SetString(PyExc_ValueError, "relay: file descriptors must be >= 0");
        return NULL;
    }
    /* chunk 0 would make splice return 0, which reads as EOF; a budget of nothing would spin. */
    if (pending < 0 || chunk <= 0 || max_bytes <= 0 || !(max_seconds > 0)) {
        PyErr_SetString(PyExc_ValueError,
                        "relay: pending must be >= 0; chunk, max_bytes and max_seconds > 0");
        return NULL;
    }
    if (chunk > (1LL << 30)) {
        chunk = 1LL << 30; /* splice takes a size_t, but no pipe holds more */
    }

    enum status status = BUDGET;
    long long got = 0, sent = 0;
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    double deadline = now() + max_seconds;
    for (;;) {
        if (pending > 0) {
            ssize_t n = splice(pipe_r, NULL, dst, NULL, (size_t)pending, SPLICE_F_MOVE);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN) {
                    status = BLOCKED;
                } else {
                    status = DST_ERROR;
                    err = errno;
                }
                break;
            }
            if (n == 0) {
                /* Nothing moved although the pipe holds bytes: only a broken pipe fd does that.
                 * Report it rather than spin. */
                status = DST_ERROR;
                err = EPIPE;
                break;
            }
            pending -= n;
            sent += n;
            continue;
        }
        /* The pipe is empty: the only place to hand control back on budget, so the caller
         * never has to care about bytes in flight unless dst is slow. */
        if (sent >= max_bytes || now() >= deadline) {
            status = BUDGET;
            break;
        }
        ssize_t n = splice(src, NULL, pipe_w, NULL, (size_t)chunk, SPLICE_F_MOVE);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                status = IDLE;
            } else {
                status = SRC_ERROR;
                err = errno;
            }
            break;
        }
        if (n == 0) {
            status = EOF_;
            break;
        }
        pending = n;
        got += n;
    }
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iLLi)", (int)status, got, sent, err);
}

static PyMethodDef methods[] = {
    {"relay", py_relay, METH_VARARGS, relay_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "portkit.forward._relayloop",
    "The blocking splice loop of one relay direction, without the GIL (see _relayloop.c).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__relayloop(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "BUDGET", BUDGET) < 0 || PyModule_AddIntConstant(m, "IDLE", IDLE) < 0
        || PyModule_AddIntConstant(m, "EOF", EOF_) < 0 || PyModule_AddIntConstant(m, "BLOCKED", BLOCKED) < 0
        || PyModule_AddIntConstant(m, "SRC_ERROR", SRC_ERROR) < 0
        || PyModule_AddIntConstant(m, "DST_ERROR", DST_ERROR) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
