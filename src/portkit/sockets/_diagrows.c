/* _diagrows: the per-socket loop of `portkit ls --all --json`, in C.
 *
 * Why: `portkit ls --all --json` is measured against `ss -tan` on tens of thousands of
 * sockets, and turning each netlink message into its JSON line in Python (one f-string with
 * a dozen substitutions) costs a large share of what `ss` takes for the whole table
 * (figures in BENCHMARKS.md). This module
 * does exactly what portkit's pure-Python column paths do (the column check in
 * portkit.sockets._netlink, the JSON lines in portkit.sockets._jsonout), for buffers of
 * equal-sized inet_diag messages (RawRows), and nothing else:
 *
 *   uniform_family(buf, size, mtype=SOCK_DIAG_BY_FAMILY) -> int
 *       The address family of the buf[:len(buf) // size * size] messages when every one of
 *       them is a socket message (of type mtype) of exactly `size` bytes of one family, else -1.
 *   socket_heads(buf, mtype=SOCK_DIAG_BY_FAMILY) -> (heads, family, used)
 *       The leading run of socket messages (of type mtype) of buf that share the first one's
 *       family, each cut to its first ROW_SIZE bytes (the attributes after struct
 *       inet_diag_msg dropped, the length field set to ROW_SIZE), joined; that family (-1
 *       when there is no such run); and the offset where the run ends. A buffer mixing
 *       messages of several sizes (TIME-WAIT and SYN-RECV sockets carry no attributes, full
 *       sockets do) so becomes equal-sized rows for json_text.
 *   json_text(body, size, count, version, head, state_text, tail) -> str
 *       The JSON lines of the `count` messages of `body`, joined by ",\n", byte for byte what
 *       portkit.sockets._jsonout.raw_rows_lines produces. `tail` is one str for every row,
 *       or a list of one per row.
 *
 * The pure-Python path stays the reference and the fallback (tests run both and compare).
 * Nothing here blocks, so the GIL is kept. Every read of `body` is bounds-checked against
 * count * size, and every write against a per-row upper bound reserved beforehand.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* Offsets in one message: struct nlmsghdr (16 bytes) then struct inet_diag_msg
 * (linux/inet_diag.h), as portkit.sockets._netlink._ROW unpacks them. */
enum {
    OFF_LEN = 0,
    OFF_TYPE = 4,
    OFF_FAMILY = 16,
    OFF_STATE = 17,
    OFF_SPORT = 20,
    OFF_DPORT = 22,
    OFF_SRC = 24,
    OFF_DST = 40,
    OFF_IFINDEX = 56,
    OFF_RQUEUE = 72,
    OFF_WQUEUE = 76,
    OFF_UID = 80,
    OFF_INODE = 84,
    ROW_SIZE = 88,
    SOCK_DIAG_BY_FAMILY = 20,
};

static uint32_t
read_u32(const unsigned char *p)
{
    uint32_t value;
    memcpy(&value, p, sizeof value); /* native order, as struct's "=I"; no alignment assumed */
    return value;
}

static uint16_t
read_u16(const unsigned char *p)
{
    uint16_t value;
    memcpy(&value, p, sizeof value);
    return value;
}

static PyObject *
uniform_family(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    Py_ssize_t size;
    int mtype = SOCK_DIAG_BY_FAMILY;
    if (!PyArg_ParseTuple(args, "y*n|i", &buf, &size, &mtype))
        return NULL;
    long family = -1;
    if (size >= ROW_SIZE && buf.len >= size) {
        const unsigned char *data = buf.buf;
        Py_ssize_t count = buf.len / size;
        family = data[OFF_FAMILY];
        for (Py_ssize_t i = 0; i < count; i++) {
            const unsigned char *msg = data + i * size;
            if (read_u32(msg + OFF_LEN) != (uint32_t)size || read_u16(msg + OFF_TYPE) != mtype
                || msg[OFF_FAMILY] != family) {
                family = -1;
                break;
            }
        }
    }
    PyBuffer_Release(&buf);
    return PyLong_FromLong(family);
}

/* The end of the leading run of socket messages of buf's family (see socket_heads), and
 * how many messages it holds. */
static Py_ssize_t
heads_run(const unsigned char *data, Py_ssize_t end, int mtype, Py_ssize_t *count, long *family)
{
    Py_ssize_t off = 0;
    *count = 0;
    *family = -1;
    while (end - off >= ROW_SIZE) {
        const unsigned char *msg = data + off;
        uint32_t len = read_u32(msg + OFF_LEN);
        if (read_u16(msg + OFF_TYPE) != mtype || len < ROW_SIZE || len > (uint64_t)(end - off)
            || (*count && msg[OFF_FAMILY] != *family))
            break;
        *family = msg[OFF_FAMILY];
        ++*count;
        off += ((Py_ssize_t)len + 3) & ~(Py_ssize_t)3; /* NLMSG_ALIGN */
    }
    return off < end ? off : end;
}

static PyObject *
socket_heads(PyObject *self, PyObject *args)
{
    Py_buffer buf;
    int mtype = SOCK_DIAG_BY_FAMILY;
    if (!PyArg_ParseTuple(args, "y*|i", &buf, &mtype))
        return NULL;
    const unsigned char *data = buf.buf;
    Py_ssize_t count;
    long family;
    Py_ssize_t used = heads_run(data, buf.len, mtype, &count, &family);
    PyObject *heads = PyBytes_FromStringAndSize(NULL, count * ROW_SIZE);
    if (heads == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(heads);
    const uint32_t row_size = ROW_SIZE;
    for (Py_ssize_t off = 0, i = 0; i < count; i++) {
        const unsigned char *msg = data + off;
        memcpy(out, msg, ROW_SIZE);
        memcpy(out + OFF_LEN, &row_size, sizeof row_size);
        out += ROW_SIZE;
        off += ((Py_ssize_t)read_u32(msg + OFF_LEN) + 3) & ~(Py_ssize_t)3;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("(Nln)", heads, family, used);
}

/* The text of an address, converted once while it repeats (a host's sockets share few). */
typedef struct {
    unsigned char raw[16];
    char text[INET6_ADDRSTRLEN];
    size_t len;
    int valid;
} AddressText;

static int
address_text(AddressText *cache, const unsigned char *raw, int af)
{
    if (cache->valid && memcmp(cache->raw, raw, 16) == 0)
        return 0;
    if (inet_ntop(af, raw, cache->text, sizeof cache->text) == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        cache->valid = 0;
        return -1;
    }
    memcpy(cache->raw, raw, 16);
    cache->len = strlen(cache->text);
    cache->valid = 1;
    return 0;
}

static char *
put(char *p, const char *text, size_t len)
{
    memcpy(p, text, len);
    return p + len;
}

#define PUT_LITERAL(p, s) put((p), (s), sizeof(s) - 1)

static char *
put_u32(char *p, uint32_t value)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (n)
        *p++ = digits[--n];
    return p;
}

/* An ASCII str's bytes; NULL with TypeError/ValueError set otherwise (the output is built as
 * ASCII, so anything else goes back to the Python path). */
static const char *
ascii_text(PyObject *text, Py_ssize_t *len)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "expected str");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) {
        PyErr_SetString(PyExc_ValueError, "expected ASCII text");
        return NULL;
    }
    *len = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_1BYTE_DATA(text);
}

/* The longest a row can be, besides head, state label and tail: the template's literal text,
 * two addresses and seven numbers of at most ten digits. */
#define ROW_FIXED_MAX 256

static PyObject *
json_text(PyObject *self, PyObject *args)
{
    Py_buffer body;
    Py_ssize_t size, count;
    int version;
    PyObject *head_obj, *states_obj, *tail_obj;
    if (!PyArg_ParseTuple(args, "y*nniUOO", &body, &size, &count, &version, &head_obj, &states_obj, &tail_obj))
        return NULL;

    PyObject *result = NULL;
    char *out = NULL;
    const char *state_text[256] = {NULL};
    Py_ssize_t state_len[256] = {0};
    Py_ssize_t head_len, tail_len = 0, state_max = 0;
    const char *tail = NULL;
    int per_row_tail = PyList_Check(tail_obj);

    if (size < ROW_SIZE || count < 0 || count > body.len / size) {
        PyErr_SetString(PyExc_ValueError, "body holds fewer than count messages of size bytes");
        goto done;
    }
    if (version != 4 && version != 6) {
        PyErr_SetString(PyExc_ValueError, "version must be 4 or 6");
        goto done;
    }
    if (!PyList_Check(states_obj) || PyList_GET_SIZE(states_obj) != 256) {
        PyErr_SetString(PyExc_TypeError, "state_text must be a list of 256 str");
        goto done;
    }
    for (int i = 0; i < 256; i++) {
        state_text[i] = ascii_text(PyList_GET_ITEM(states_obj, i), &state_len[i]);
        if (state_text[i] == NULL)
            goto done;
        if (state_len[i] > state_max)
            state_max = state_len[i];
    }
    const char *head = ascii_text(head_obj, &head_len);
    if (head == NULL)
        goto done;
    if (per_row_tail) {
        if (PyList_GET_SIZE(tail_obj) != count) {
            PyErr_SetString(PyExc_ValueError, "a list of tails needs one per row");
            goto done;
        }
    } else if ((tail = ascii_text(tail_obj, &tail_len)) == NULL) {
        goto done;
    }

    /* One pass to size the output exactly enough: the per-row bound times count, with the
     * per-row tails' lengths added when there is one per row. */
    Py_ssize_t bound = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t this_tail = tail_len;
        if (per_row_tail && ascii_text(PyList_GET_ITEM(tail_obj, i), &this_tail) == NULL)
            goto done;
        Py_ssize_t row = ROW_FIXED_MAX + 2 * INET6_ADDRSTRLEN + head_len + state_max + this_tail + 2;
        if (bound > PY_SSIZE_T_MAX - row) {
            PyErr_NoMemory();
            goto done;
        }
        bound += row;
    }
    out = PyMem_Malloc(bound ? (size_t)bound : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        goto done;
    }

    const unsigned char *data = body.buf;
    int af = version == 4 ? AF_INET : AF_INET6;
    AddressText src = {0}, dst = {0};
    char *p = out;
    for (Py_ssize_t i = 0; i < count; i++) {
        const unsigned char *msg = data + i * size;
        if (address_text(&src, msg + OFF_SRC, af) < 0 || address_text(&dst, msg + OFF_DST, af) < 0)
            goto done;
        const char *row_tail = tail;
        Py_ssize_t row_tail_len = tail_len;
        if (per_row_tail)
            row_tail = ascii_text(PyList_GET_ITEM(tail_obj, i), &row_tail_len); /* checked above */
        uint32_t ifindex = read_u32(msg + OFF_IFINDEX);
        unsigned state = msg[OFF_STATE];

        if (i)
            p = PUT_LITERAL(p, ",\n");
        p = put(p, head, (size_t)head_len);
        p = put(p, state_text[state], (size_t)state_len[state]);
        p = PUT_LITERAL(p, "\", \"local\": {\"address\": \"");
        p = put(p, src.text, src.len);
        p = PUT_LITERAL(p, "\", \"port\": ");
        p = put_u32(p, (uint32_t)((msg[OFF_SPORT] << 8) | msg[OFF_SPORT + 1])); /* network order */
        p = PUT_LITERAL(p, "}, \"remote\": {\"address\": \"");
        p = put(p, dst.text, dst.len);
        p = PUT_LITERAL(p, "\", \"port\": ");
        p = put_u32(p, (uint32_t)((msg[OFF_DPORT] << 8) | msg[OFF_DPORT + 1]));
        p = PUT_LITERAL(p, "}, \"recv_q\": ");
        p = put_u32(p, read_u32(msg + OFF_RQUEUE));
        p = PUT_LITERAL(p, ", \"send_q\": ");
        p = put_u32(p, read_u32(msg + OFF_WQUEUE));
        p = PUT_LITERAL(p, ", \"uid\": ");
        p = put_u32(p, read_u32(msg + OFF_UID));
        p = PUT_LITERAL(p, ", \"inode\": ");
        p = put_u32(p, read_u32(msg + OFF_INODE));
        p = PUT_LITERAL(p, ", \"interface\": ");
        p = ifindex ? put_u32(p, ifindex) : PUT_LITERAL(p, "null");
        p = put(p, row_tail, (size_t)row_tail_len);
    }

    Py_ssize_t len = p - out;
    result = PyUnicode_New(len, 127); /* every byte written is ASCII (checked or generated) */
    if (result != NULL)
        memcpy(PyUnicode_1BYTE_DATA(result), out, (size_t)len);

done:
    PyMem_Free(out);
    PyBuffer_Release(&body);
    return result;
}

static PyMethodDef methods[] = {
    {"uniform_family", uniform_family, METH_VARARGS,
     "uniform_family(buf, size, mtype=20) -> family of buf's equal-sized socket messages, or -1"},
    {"socket_heads", socket_heads, METH_VARARGS,
     "socket_heads(buf, mtype=20) -> (the leading socket messages cut to equal-sized rows, family, bytes used)"},
    {"json_text", json_text, METH_VARARGS,
     "json_text(body, size, count, version, head, state_text, tail) -> the rows' JSON lines"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "portkit.sockets._diagrows",
    "C versions of three loops of portkit.sockets._netlink (see the source's opening comment).", -1, methods,
};

PyMODINIT_FUNC
PyInit__diagrows(void)
{
    return PyModule_Create(&module);
}
