/* _fdlinks: which sockets one process holds, read from its /proc/PID/fd, in C.
 *
 * Why: `portkit ls -p` and `portkit who` attribute sockets to processes the way `ss -p` and
 * lsof do, by reading the link of every open file descriptor of every process
 * ("socket:[INODE]"). On a host holding tens of thousands of sockets that is tens of thousands
 * of readlinkat() calls, and in Python each costs about as much again as the system call (the
 * path conversion, a str for the result, the prefix test and the int). This module does the
 * loop of portkit.sockets._procs._socket_inodes_py, its Python reference, and nothing else:
 *
 *   socket_inodes(dir_fd) -> list[int]
 *       The socket inodes among the links in the directory open as `dir_fd` (a /proc/PID/fd),
 *       in directory order. A link that cannot be read (the fd was closed meanwhile) is
 *       skipped; a directory that cannot be read raises OSError.
 *
 * The directory is read through a duplicate of dir_fd, rewound afterwards (as os.listdir(fd)
 * does), so the caller's descriptor is left as it was. Nothing here calls back into Python
 * while the directory is open, so the GIL is kept.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static const char PREFIX[] = "socket:[";
#define PREFIX_LEN (sizeof(PREFIX) - 1)

/* The inode of a "socket:[N]" link, or -1 for any other link (N: decimal, at most 20 digits). */
static long long
socket_inode(const char *link, ssize_t len)
{
    if (len < (ssize_t)PREFIX_LEN + 2 || memcmp(link, PREFIX, PREFIX_LEN) != 0 || link[len - 1] != ']')
        return -1;
    unsigned long long value = 0;
    for (ssize_t i = PREFIX_LEN; i < len - 1; i++) {
        if (link[i] < '0' || link[i] > '9' || i - (ssize_t)PREFIX_LEN >= 19)
            return -1;
        value = value * 10 + (unsigned long long)(link[i] - '0');
    }
    return (long long)value;
}

static PyObject *
socket_inodes(PyObject *self, PyObject *args)
{
    int dir_fd;
    if (!PyArg_ParseTuple(args, "i", &dir_fd))
        return NULL;
    int copy = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    DIR *dir = fdopendir(copy);
    if (dir == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(copy);
        return NULL;
    }
    PyObject *found = PyList_New(0);
    char link[64]; /* "socket:[" + 20 digits + "]" fits; a longer link is not a socket's */
    struct dirent *entry;
    errno = 0;
    while (found != NULL && (entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        ssize_t len = readlinkat(dir_fd, entry->d_name, link, sizeof link);
        if (len < 0 || len >= (ssize_t)sizeof link) {
            errno = 0;
            continue;
        }
        long long inode = socket_inode(link, len);
        if (inode < 0)
            continue;
        PyObject *number = PyLong_FromLongLong(inode);
        if (number == NULL || PyList_Append(found, number) < 0)
            Py_CLEAR(found);
        Py_XDECREF(number);
        errno = 0;
    }
    if (found != NULL && errno != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_CLEAR(found);
    }
    rewinddir(dir);
    closedir(dir);
    return found;
}

static PyMethodDef methods[] = {
    {"socket_inodes", socket_inodes, METH_VARARGS,
     "socket_inodes(dir_fd) -> the socket inodes among the links of a /proc/PID/fd directory"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "portkit.sockets._fdlinks",
    "The fd-link loop of portkit.sockets._procs in C (see the source's opening comment).", -1, methods,
};

PyMODINIT_FUNC
PyInit__fdlinks(void)
{
    return PyModule_Create(&module);
}
