/* portkit.scan._connectio: the first tries of a connect() scan of one host, in C.
 *
 * Python decides everything: which probes go out (the Schedule), what an errno means (the
 * STATES table in _states.py), whether a connected socket is a self-connect, and every
 * socket this module hands back. This module only runs the per-port system calls of
 * _connect.py's loop for a batch of first tries, in the same order and with the same rules:
 *
 *   connect(); if EINPROGRESS, connect() again, which on Linux returns the outcome of a
 *   connect that finished inside the first call (ECONNREFUSED, EISCONN); if still EALREADY,
 *   ask SO_ERROR once (it reports an ICMP error that came meanwhile).
 *
 * A refused socket is left unconnected and is reused for the next port (Linux resets it on
 * the failing connect()), so a closed port costs two system calls. Refused ports come back
 * as a list of keys; every other outcome comes back as (key, fd, errno) with the fd still
 * open, for Python to settle, register on its selector or close: errno PENDING for a
 * connect still under way, 0 for a connected socket, anything else a failure.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PENDING (-1) /* the connect is still under way: Python waits for it on its selector */

PyDoc_STRVAR(connect_batch_doc,
             "connect_batch(sockaddr, keys, ports, offset, spare) -> (refused, others, spare)\n\n"
             "connect() to the port of each key (a first try) of the host whose struct sockaddr_in\n"
             "or sockaddr_in6 is `sockaddr` (its port is replaced). `ports` is array('H') of the\n"
             "scan's ports, key - offset its index. `spare` is an unconnected socket's fd to use\n"
             "first, or -1. Returns the refused keys, (key, fd, errno) for every other outcome\n"
             "(errno -1: still connecting; the fd is the caller's), and the spare fd (or -1).\n"
             "If socket() fails, what was done so far is returned with the rest of the keys not\n"
             "tried: len(refused) + len(others) says how far it got.");

static int
add_other(PyObject *others, long long key, int fd, int err)
{
    PyObject *item = Py_BuildValue("(Lii)", key, fd, err);
    if (item == NULL) {
        return -1;
    }
    int rc = PyList_Append(others, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *
py_connect_batch(PyObject *self, PyObject *args)
{
    Py_buffer addr, ports;
    PyObject *keys;
    long long offset;
    int spare;
    if (!PyArg_ParseTuple(args, "y*O!y*Li:connect_batch", &addr, &PyList_Type, &keys, &ports, &offset,
                          &spare)) {
        return NULL;
    }
    PyObject *refused = NULL, *others = NULL, *result = NULL;
    struct sockaddr_storage sa;
    socklen_t salen = (socklen_t)addr.len;
    uint16_t *port_field;
    if (ports.len % 2 != 0 || addr.len < (Py_ssize_t)sizeof(sa_family_t) ||
        addr.len > (Py_ssize_t)sizeof(sa)) {
        PyErr_SetString(PyExc_ValueError, "connect_batch: bad sockaddr or ports (array('H'))");
        goto done;
    }
    memcpy(&sa, addr.buf, (size_t)addr.len);
    int family = sa.ss_family;
    if (family == AF_INET && addr.len >= (Py_ssize_t)sizeof(struct sockaddr_in)) {
        port_field = &((struct sockaddr_in *)&sa)->sin_port;
    }
    else if (family == AF_INET6 && addr.len >= (Py_ssize_t)sizeof(struct sockaddr_in6)) {
        port_field = &((struct sockaddr_in6 *)&sa)->sin6_port;
    }
    else {
        PyErr_SetString(PyExc_ValueError, "connect_batch: not an AF_INET or AF_INET6 sockaddr");
        goto done;
    }
    Py_ssize_t nports = ports.len / 2;
    refused = PyList_New(0);
    others = PyList_New(0);
    if (refused == NULL || others == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *item = PyList_GET_ITEM(keys, i);
        Py_INCREF(item); /* borrowed from a list that __index__ may change */
        long long key = PyLong_AsLongLong(item);
        Py_DECREF(item);
        if (key == -1 && PyErr_Occurred()) {
            goto done;
        }
        long long index = key - offset;
        if (index < 0 || index >= nports) {
            PyErr_Format(PyExc_ValueError, "probe key %lld is not one of this host's", key);
            goto done;
        }
        uint16_t port;
        memcpy(&port, (const char *)ports.buf + 2 * index, sizeof port);
        *port_field = htons(port);
        int fd = spare;
        spare = -1;
        if (fd < 0) {
            fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                break; /* the caller's Python path meets the same error and raises it */
            }
        }
        int err, asked = 0;
        Py_BEGIN_ALLOW_THREADS
        err = connect(fd, (struct sockaddr *)&sa, salen) == 0 ? 0 : errno;
        if (err == EINPROGRESS) {
            err = connect(fd, (struct sockaddr *)&sa, salen) == 0 ? 0 : errno;
            if (err == EALREADY) {
                int soerr = 0;
                socklen_t len = sizeof soerr;
                asked = 1;
                err = getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 ? soerr : errno;
                if (err == 0) {
                    err = PENDING;
                }
            }
        }
        Py_END_ALLOW_THREADS
        /* Reused only when connect() itself reported the refusal: it then left the socket
         * unconnected. One whose error SO_ERROR took would answer the next connect() with
         * ECONNABORTED, so it goes back to Python like any other outcome (and is closed). */
        if (err == ECONNREFUSED && !asked) {
            PyObject *k = PyLong_FromLongLong(key);
            if (k == NULL || PyList_Append(refused, k) < 0) {
                Py_XDECREF(k);
                close(fd);
                goto done;
            }
            Py_DECREF(k);
            spare = fd;
            continue;
        }
        if (add_other(others, key, fd, err == EISCONN ? 0 : err) < 0) {
            close(fd);
            goto done;
        }
    }
    result = Py_BuildValue("(OOi)", refused, others, spare);
    if (result != NULL) {
        spare = -1; /* the caller's now */
    }
done:
    if (result == NULL) {
        /* On an exception the sockets handed out so far are closed: nobody else holds them. */
        if (others != NULL) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(others); i++) {
                PyObject *fd = PyTuple_GET_ITEM(PyList_GET_ITEM(others, i), 1);
                close((int)PyLong_AsLong(fd));
            }
        }
        if (spare >= 0) {
            close(spare);
        }
    }
    Py_XDECREF(refused);
    Py_XDECREF(others);
    PyBuffer_Release(&addr);
    PyBuffer_Release(&ports);
    return result;
}

static PyMethodDef methods[] = {
    {"connect_batch", py_connect_batch, METH_VARARGS, connect_batch_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "portkit.scan._connectio",
    "The system calls of a connect() scan's first tries, a batch per call (see _connectio.c).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__connectio(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "PENDING", PENDING) < 0) {
        Py_CLEAR(m);
    }
    return m;
}
