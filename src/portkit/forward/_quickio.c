/* portkit.forward._quickio: the splice engine's loop turn, in C and without the GIL.
 *
 * One call is one turn of a loop of `portkit.forward._splice`: epoll_wait(), then the
 * commonest event of all -- a readable edge of a copying connection with nothing held either
 * way -- handled here: one recv() into the loop's buffer, one send() of it to the other leg.
 * That is `SpliceEngine._copy_quick`'s path, with the same rule for ending the read: a read
 * shorter than the buffer is taken as all that was queued (edge-triggered: a later byte
 * raises a new edge).
 *
 * Which events qualify is the caller's decision, written into `peers` (an array of C ints
 * indexed by file descriptor): peers[fd] is the descriptor to copy fd's bytes to, or -1
 * for "not here". This module never writes `peers`; Python sets an entry after every change
 * of the connection's state and clears it before the descriptor is closed. Bytes sent are
 * added to moved[fd] (an array of 64-bit ints) for Python to count.
 *
 * Every other event comes back to Python as (fd, mask, UNTOUCHED, 0, None), and so do the
 * outcomes this module does not decide: READ (n bytes read, and the bytes not sent as a
 * bytes object: a full buffer, which means bulk, or a send the other leg did not take whole;
 * the turn stops there and the events left are returned UNTOUCHED), END (the read said EOF),
 * RECV_ERROR and SEND_ERROR (n: the errno). The unsent bytes are copied out of the buffer
 * before returning: Python handles the events in order and its own reads reuse the buffer.
 *
 * A turn whose events were all quick copies, one or two of them, does not return: it waits
 * again, until an event Python must decide, or a busier wait, or `timeout_ms` (the turn's
 * whole budget; -1: none) has passed, or epoll_wait is interrupted. At one client, that spares
 * a round trip through the interpreter for every request and every answer.
 *
 * The GIL is released for the whole turn, so the loops of one forwarder (SO_REUSEPORT
 * listeners, a thread each) really run at once. Only the calling thread touches its loop's
 * arrays and buffer, and Python cannot resize them while this call holds their buffers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_EVENTS 1024
#define QUICK_AGAIN 2 /* at most this many events in a wait: the turn may wait again in C */

enum { UNTOUCHED = 0, READ = 1, END = 2, RECV_ERROR = 3, SEND_ERROR = 4 };

typedef struct {
    int fd;
    unsigned int mask;
    int code;
    long n;
    long sent;
} outcome;

static int get_array(PyObject *obj, Py_buffer *view, const char *format, Py_ssize_t itemsize,
                     const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (f[0] == '@' || f[0] == '=')
        f++;
    if (view->itemsize != itemsize || strcmp(f, format) != 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a writable array of '%s' (%zd-byte items)", what,
                     format, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *quick_turn(PyObject *self, PyObject *args) {
    int epfd, timeout;
    PyObject *peers_obj, *moved_obj, *buffer_obj;
    if (!PyArg_ParseTuple(args, "iiOOO:turn", &epfd, &timeout, &peers_obj, &moved_obj, &buffer_obj))
        return NULL;
    Py_buffer peers_view, moved_view, buffer_view;
    if (get_array(peers_obj, &peers_view, "i", sizeof(int), "peers") < 0)
        return NULL;
    if (get_array(moved_obj, &moved_view, "q", sizeof(long long), "moved") < 0) {
        PyBuffer_Release(&peers_view);
        return NULL;
    }
    if (PyObject_GetBuffer(buffer_obj, &buffer_view, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&peers_view);
        PyBuffer_Release(&moved_view);
        return NULL;
    }
    const int *peers = peers_view.buf;
    long long *moved = moved_view.buf;
    Py_ssize_t npeers = peers_view.len / (Py_ssize_t)sizeof(int);
    if (moved_view.len / (Py_ssize_t)sizeof(long long) < npeers)
        npeers = moved_view.len / (Py_ssize_t)sizeof(long long);
    char *buf = buffer_view.buf;
    size_t size = (size_t)buffer_view.len;

    struct epoll_event events[MAX_EVENTS];
    outcome out[MAX_EVENTS];
    int count = 0, nout = 0, wait_errno = 0;

    Py_BEGIN_ALLOW_THREADS
    struct timespec began;
    clock_gettime(CLOCK_MONOTONIC, &began);
    int wait_ms = timeout;
    for (;;) {
        count = epoll_wait(epfd, events, MAX_EVENTS, wait_ms);
        if (count < 0) {
            wait_errno = errno;
            count = 0;
        }
        int i = 0;
        for (; i < count; i++) {
            int fd = events[i].data.fd;
            unsigned int mask = events[i].events;
            int dst = (fd >= 0 && fd < npeers) ? peers[fd] : -1;
            if (dst < 0 || (mask & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                out[nout++] = (outcome){fd, mask, UNTOUCHED, 0, 0};
                continue;
            }
            if (!(mask & EPOLLIN))
                continue; /* a writable edge, and nothing is held for this socket */
            ssize_t n = recv(fd, buf, size, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) /* bytes may still be queued and no new edge would say so */
                    out[nout++] = (outcome){fd, mask, UNTOUCHED, 0, 0};
                else if (errno != EAGAIN && errno != EWOULDBLOCK)
                    out[nout++] = (outcome){fd, mask, RECV_ERROR, errno, 0};
                continue;
            }
            if (n == 0) {
                out[nout++] = (outcome){fd, mask, END, 0, 0};
                continue;
            }
            if ((size_t)n == size) { /* more was queued than a message: Python passes it on */
                out[nout++] = (outcome){fd, mask, READ, (long)n, 0};
                i++;
                break;
            }
            ssize_t sent = send(dst, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (sent < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    out[nout++] = (outcome){fd, mask, SEND_ERROR, errno, 0};
                    continue;
                }
                sent = 0;
            }
            moved[fd] += sent;
            if (sent < n) { /* the rest stays in the buffer: Python holds it */
                out[nout++] = (outcome){fd, mask, READ, (long)n, (long)sent};
                i++;
                break;
            }
        }
        for (; i < count; i++)
            out[nout++] = (outcome){events[i].data.fd, events[i].events, UNTOUCHED, 0, 0};
        /* Every event was a quick copy: wait again, here, until Python has something to decide
         * or its time is up (`timeout` is the whole turn's budget, the time to its next sweep).
         * Only while events come one or two at a time (few clients): under load, going back
         * through Python lets more events gather for the next epoll_wait, and that batching
         * costs less than it (measured: waiting again at once cost 2 us of system time per
         * request at 50 clients, 0.87x the requests/s). */
        if (nout > 0 || count == 0 || count > QUICK_AGAIN || timeout == 0)
            break;
        if (timeout > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long spent = (now.tv_sec - began.tv_sec) * 1000L + (now.tv_nsec - began.tv_nsec) / 1000000L;
            if (spent >= timeout)
                break;
            wait_ms = (int)(timeout - spent);
        }
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&peers_view);
    PyBuffer_Release(&moved_view);
    if (wait_errno && wait_errno != EINTR) {
        PyBuffer_Release(&buffer_view);
        errno = wait_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *result = PyList_New(nout);
    if (result == NULL) {
        PyBuffer_Release(&buffer_view);
        return NULL;
    }
    for (int k = 0; k < nout; k++) {
        PyObject *item;
        if (out[k].code == READ) /* the one READ is the turn's last read: the buffer is its own */
            item = Py_BuildValue("(iIily#)", out[k].fd, out[k].mask, out[k].code, out[k].n,
                                 buf + out[k].sent, (Py_ssize_t)(out[k].n - out[k].sent));
        else
            item = Py_BuildValue("(iIilO)", out[k].fd, out[k].mask, out[k].code, out[k].n, Py_None);
        if (item == NULL) {
            Py_DECREF(result);
            PyBuffer_Release(&buffer_view);
            return NULL;
        }
        PyList_SET_ITEM(result, k, item);
    }
    PyBuffer_Release(&buffer_view);
    return result;
}

static PyObject *quick_collect(PyObject *self, PyObject *args) {
    PyObject *moved_obj;
    if (!PyArg_ParseTuple(args, "O:collect", &moved_obj))
        return NULL;
    Py_buffer view;
    if (get_array(moved_obj, &view, "q", sizeof(long long), "moved") < 0)
        return NULL;
    long long *moved = view.buf;
    Py_ssize_t count = view.len / (Py_ssize_t)sizeof(long long);
    PyObject *result = PyList_New(0);
    for (Py_ssize_t fd = 0; result != NULL && fd < count; fd++) {
        if (moved[fd] == 0)
            continue;
        PyObject *item = Py_BuildValue("(nL)", fd, moved[fd]);
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(item);
        moved[fd] = 0;
    }
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"collect", quick_collect, METH_VARARGS,
     "collect(moved) -> [(fd, bytes), ...]\n\n"
     "The descriptors whose bytes the turns copied since the last collect, each entry zeroed."},
    {"turn", quick_turn, METH_VARARGS,
     "turn(epfd, timeout_ms, peers, moved, buffer) -> [(fd, mask, code, n, unsent), ...]\n\n"
     "One loop turn: epoll_wait(), the copy fast path for the descriptors `peers` names,\n"
     "again until an event is left for Python or timeout_ms has passed; every other event\n"
     "returned (see _quickio.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "portkit.forward._quickio",
    "The splice engine's loop turn in C, without the GIL (see _quickio.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__quickio(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "UNTOUCHED", UNTOUCHED) < 0 || PyModule_AddIntConstant(m, "READ", READ) < 0 ||
        PyModule_AddIntConstant(m, "END", END) < 0 ||
        PyModule_AddIntConstant(m, "RECV_ERROR", RECV_ERROR) < 0 ||
        PyModule_AddIntConstant(m, "SEND_ERROR", SEND_ERROR) < 0 ||
        PyModule_AddIntConstant(m, "MAX_EVENTS", MAX_EVENTS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
