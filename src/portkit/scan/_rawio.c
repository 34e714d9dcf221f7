/* portkit.scan._rawio: the per-packet work of a raw TCP scan of one host, in C.
 *
 * Python decides everything: which probes go out (the Schedule), what a reply means (the
 * STATES table in _states.py, handed in here as response codes), and the keyed cookie (the
 * per-host lane below is Python's hash() of the cookie's host key). This module only builds
 * a batch of SYN/ACK probes and sends it with one sendmmsg(2), and reads queued replies with
 * recvmmsg(2), parses IPv4/IPv6 TCP and ICMP, checks the cookie and returns compact columns
 * (probe keys, try numbers, response codes, TTLs) instead of one Python object per packet.
 *
 * The cookie must equal Python's `hash((host_key, port)) & 0xFFFFFFFF`: CPython's tuple hash
 * (xxHash-based since 3.8) of two lanes, hash(host_key) and hash(port) == port. `cookie()` is
 * exported so the Python side can check the two agree before using this module at all.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 1024          /* datagrams per sendmmsg/recvmmsg call */
#define MAX_BATCHES 64      /* per drain call, so one busy socket cannot starve the send loop */
#define SLOT 192            /* IPv4 header with options + ICMP + quoted IPv4 header + 8 bytes */
#define TCP_LEN 20
#define TRY_MASK 15
#define IGNORE 0xFF         /* a response code the scan type does not settle on */

#define XXPRIME_1 11400714785074694791ULL
#define XXPRIME_2 14029467366897019727ULL
#define XXPRIME_5 2870177450012600261ULL
#define XXROTATE(x) (((x) << 31) | ((x) >> 33))

enum kind { V4_TCP = 0, V4_ICMP = 1, V6_TCP = 2, V6_ICMP = 3 };

static uint32_t
cookie_of(uint64_t lane, uint32_t port)
{
    uint64_t acc = XXPRIME_5;
    acc += lane * XXPRIME_2;
    acc = XXROTATE(acc);
    acc *= XXPRIME_1;
    acc += (uint64_t)port * XXPRIME_2;
    acc = XXROTATE(acc);
    acc *= XXPRIME_1;
    acc += 2 ^ (XXPRIME_5 ^ 3527539ULL);
    if (acc == (uint64_t)-1) {
        acc = 1546275796;
    }
    return (uint32_t)acc;
}

static inline uint16_t
get16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t
get32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void
put16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void
put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* What a probe batch needs to know, parsed once per call. */
struct probe_spec {
    const unsigned char *ports; /* port index -> port (native byte order, array('H')) */
    Py_ssize_t nports;
    long long offset;      /* key - offset = port index: the host's first key */
    uint64_t lane;         /* hash(host key) */
    long long hsum;        /* checksum sum of all but port and cookie, or -1: the kernel sums */
    unsigned sport, flags;
    int with_ack;
};

/* One 20-byte TCP header, byte for byte what _raw.py's Python path builds. */
static int
build_probe(const struct probe_spec *s, long long key, unsigned char *out)
{
    long long index = key - s->offset;
    if (index < 0 || index >= s->nports) {
        return -1;
    }
    uint16_t port16;
    memcpy(&port16, s->ports + 2 * index, sizeof port16); /* any buffer: no alignment assumed */
    uint32_t port = port16;
    uint32_t seq = cookie_of(s->lane, port);
    uint32_t ack = s->with_ack ? seq : 0;
    uint32_t csum = 0;
    if (s->hsum >= 0) {
        /* -(sum) % 0xFFFF, as Python computes it: RFC 1071's folded complement. */
        uint64_t total = (uint64_t)s->hsum + port + seq + ack;
        csum = (uint32_t)((0xFFFF - total % 0xFFFF) % 0xFFFF);
    }
    put16(out, s->sport);
    put16(out + 2, port);
    put32(out + 4, seq);
    put32(out + 8, ack);
    out[12] = 0x50;
    out[13] = (unsigned char)s->flags;
    put16(out + 14, 1024);
    put16(out + 16, csum);
    put16(out + 18, 0);
    return 0;
}

static int
parse_spec(struct probe_spec *s, Py_buffer *ports, long long offset, long long lane, long long hsum,
           unsigned sport, unsigned flags, int with_ack)
{
    if (ports->len % 2 != 0 || sport > 0xFFFF || flags > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "ports must be an array('H'); sport and flags in range");
        return -1;
    }
    s->ports = ports->buf;
    s->nports = ports->len / 2;
    s->offset = offset;
    s->lane = (uint64_t)lane;
    s->hsum = hsum;
    s->sport = sport;
    s->flags = flags;
    s->with_ack = with_ack;
    return 0;
}

/* Build the probes for `keys` into `buffer` (20 bytes each); -1 with an exception on a bad key. */
static int
build_all(const struct probe_spec *s, PyObject *keys, Py_ssize_t start, Py_ssize_t count,
          unsigned char *buffer)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        /* The list can shrink under us: a key's __index__ runs Python code, and send_tcp lets
         * other threads run during sendmmsg. Re-check the length before every read. */
        if (start + i >= PyList_GET_SIZE(keys)) {
            PyErr_SetString(PyExc_RuntimeError, "keys changed size during the call");
            return -1;
        }
        PyObject *item = PyList_GET_ITEM(keys, start + i);
        Py_INCREF(item); /* borrowed from a list that __index__ may clear */
        long long key = PyLong_AsLongLong(item);
        Py_DECREF(item);
        if (key == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (build_probe(s, key, buffer + i * TCP_LEN) < 0) {
            PyErr_Format(PyExc_ValueError, "probe key %lld is not one of this host's", key);
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(cookie_doc, "cookie(lane, port) -> hash((k, port)) & 0xFFFFFFFF for hash(k) == lane.");

static PyObject *
py_cookie(PyObject *self, PyObject *args)
{
    long long lane;
    unsigned port;
    if (!PyArg_ParseTuple(args, "LI:cookie", &lane, &port)) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(cookie_of((uint64_t)lane, port));
}

PyDoc_STRVAR(build_tcp_doc,
             "build_tcp(keys, ports, offset, lane, hsum, sport, flags, with_ack) -> bytes\n\n"
             "The probes send_tcp would send for `keys`, back to back (for tests).");

static PyObject *
py_build_tcp(PyObject *self, PyObject *args)
{
    PyObject *keys;
    Py_buffer ports;
    long long offset, lane, hsum;
    unsigned sport, flags;
    int with_ack;
    struct probe_spec spec;
    if (!PyArg_ParseTuple(args, "O!y*LLLIIp:build_tcp", &PyList_Type, &keys, &ports, &offset, &lane,
                          &hsum, &sport, &flags, &with_ack)) {
        return NULL;
    }
    PyObject *out = NULL;
    if (parse_spec(&spec, &ports, offset, lane, hsum, sport, flags, with_ack) == 0) {
        Py_ssize_t n = PyList_GET_SIZE(keys);
        out = PyBytes_FromStringAndSize(NULL, n * TCP_LEN);
        if (out != NULL &&
            build_all(&spec, keys, 0, n, (unsigned char *)PyBytes_AS_STRING(out)) < 0) {
            Py_CLEAR(out);
        }
    }
    PyBuffer_Release(&ports);
    return out;
}

PyDoc_STRVAR(send_tcp_doc,
             "send_tcp(fd, sockaddr, keys, ports, offset, lane, hsum, sport, flags, with_ack) -> int\n\n"
             "Build a TCP probe for each key (a first try) and send them all to `sockaddr` with\n"
             "sendmmsg(2), BATCH per call. A datagram the kernel refuses (ENOBUFS...) is skipped:\n"
             "it counts as sent and lost, and retransmission covers it. Returns len(keys).");

static PyObject *
py_send_tcp(PyObject *self, PyObject *args)
{
    int fd, with_ack;
    Py_buffer addr, ports;
    PyObject *keys;
    long long offset, lane, hsum;
    unsigned sport, flags;
    struct probe_spec spec;
    if (!PyArg_ParseTuple(args, "iy*O!y*LLLIIp:send_tcp", &fd, &addr, &PyList_Type, &keys, &ports,
                          &offset, &lane, &hsum, &sport, &flags, &with_ack)) {
        return NULL;
    }
    PyObject *result = NULL;
    unsigned char *buffer = NULL;
    struct iovec *iovs = NULL;
    struct mmsghdr *msgs = NULL;
    if (parse_spec(&spec, &ports, offset, lane, hsum, sport, flags, with_ack) < 0) {
        goto done;
    }
    if (addr.len > (Py_ssize_t)sizeof(struct sockaddr_storage)) {
        PyErr_SetString(PyExc_ValueError, "sockaddr too long");
        goto done;
    }
    buffer = PyMem_Malloc(BATCH * TCP_LEN);
    iovs = PyMem_Calloc(BATCH, sizeof(*iovs));
    msgs = PyMem_Calloc(BATCH, sizeof(*msgs));
    if (buffer == NULL || iovs == NULL || msgs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < BATCH; i++) {
        iovs[i].iov_base = buffer + i * TCP_LEN;
        iovs[i].iov_len = TCP_LEN;
        msgs[i].msg_hdr.msg_name = addr.buf;
        msgs[i].msg_hdr.msg_namelen = (socklen_t)addr.len;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    Py_ssize_t total = PyList_GET_SIZE(keys);
    for (Py_ssize_t start = 0; start < total; start += BATCH) {
        Py_ssize_t n = total - start < BATCH ? total - start : BATCH;
        if (build_all(&spec, keys, start, n, buffer) < 0) {
            goto done;
        }
        Py_ssize_t done_count = 0;
        while (done_count < n) {
            int sent;
            Py_BEGIN_ALLOW_THREADS
            sent = sendmmsg(fd, msgs + done_count, (unsigned)(n - done_count), 0);
            Py_END_ALLOW_THREADS
            if (sent < 0 && errno == EBADF) {
                PyErr_SetFromErrno(PyExc_OSError);
                goto done;
            }
            /* Any other refusal loses the datagram at its head, as a lossy link would. */
            done_count += sent > 0 ? sent : 1;
        }
    }
    result = PyLong_FromSsize_t(total);
done:
    PyMem_Free(buffer);
    PyMem_Free(iovs);
    PyMem_Free(msgs);
    PyBuffer_Release(&addr);
    PyBuffer_Release(&ports);
    return result;
}

/* What a reply must show to be ours, and how to report it. */
struct match {
    const unsigned char *address; /* the host's address, 4 or 16 bytes */
    const unsigned char *index_of; /* port -> port index or -1 (65536 native int32) */
    long long offset;
    uint64_t lane;
    unsigned base;                /* our source port for try 0 */
    unsigned char rst, syn_ack;   /* response codes; IGNORE: the scan type ignores it */
    const unsigned char *icmp;    /* ICMP unreachable code -> response code or IGNORE (256 entries) */
};

/* Columns of results, grown as replies are accepted. */
struct columns {
    PyObject *keys;
    unsigned char *trynos, *codes, *ttls;
    Py_ssize_t n, cap;
};

static int
accept_reply(struct columns *c, const struct match *m, uint32_t port, uint32_t our_port, uint32_t seq,
             unsigned char code, unsigned char ttl)
{
    if (code == IGNORE || port > 0xFFFF) {
        return 0;
    }
    int32_t index;
    memcpy(&index, m->index_of + 4 * port, sizeof index); /* any buffer: no alignment assumed */
    uint32_t tryno = our_port - m->base; /* wraps for ports below base: rejected below */
    if (index < 0 || tryno > TRY_MASK || seq != cookie_of(m->lane, port)) {
        return 0;
    }
    if (c->n == c->cap) {
        Py_ssize_t cap = c->cap * 2;
        unsigned char *t = PyMem_Realloc(c->trynos, cap), *k, *l;
        if (t == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->trynos = t;
        k = PyMem_Realloc(c->codes, cap);
        if (k == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->codes = k;
        l = PyMem_Realloc(c->ttls, cap);
        if (l == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->ttls = l;
        c->cap = cap;
    }
    PyObject *key = PyLong_FromLongLong(m->offset + index);
    if (key == NULL || PyList_Append(c->keys, key) < 0) {
        Py_XDECREF(key);
        return -1;
    }
    Py_DECREF(key);
    c->trynos[c->n] = (unsigned char)tryno;
    c->codes[c->n] = code;
    c->ttls[c->n] = ttl;
    c->n++;
    return 0;
}

/* A TCP header at `tcp` (`len` bytes): a SYN-ACK or RST answering one of our probes? */
static int
take_tcp(struct columns *c, const struct match *m, const unsigned char *tcp, size_t len, unsigned char ttl)
{
    if (len < TCP_LEN) {
        return 0;
    }
    unsigned flags = tcp[13];
    uint32_t seq = get32(tcp + 4), ack = get32(tcp + 8);
    unsigned char code;
    if (flags & 0x04) { /* RST: to a SYN it acks seq + 1; to an ACK probe its seq is our ack */
        code = m->rst;
        seq = (flags & 0x10) ? ack - 1 : seq;
    }
    else if ((flags & 0x02) && (flags & 0x10)) {
        code = m->syn_ack;
        seq = ack - 1;
    }
    else {
        return 0;
    }
    return accept_reply(c, m, get16(tcp), get16(tcp + 2), seq, code, ttl);
}

/* An ICMP(v6) unreachable's quoted TCP header (`quoted`, >= 8 bytes) of a probe to our host. */
static int
take_quoted(struct columns *c, const struct match *m, unsigned code, const unsigned char *quoted,
            unsigned char ttl)
{
    /* The probe's source port is ours, its destination the probed port. */
    return accept_reply(c, m, get16(quoted + 2), get16(quoted), get32(quoted + 4), m->icmp[code & 0xFF], ttl);
}

static int
take_packet(struct columns *c, const struct match *m, enum kind kind, const unsigned char *p, size_t len,
            const struct msghdr *hdr)
{
    if (kind == V4_TCP || kind == V4_ICMP) {
        if (len < 20 || (p[0] >> 4) != 4) {
            return 0;
        }
        size_t ihl = (size_t)(p[0] & 0x0F) * 4;
        if (ihl < 20 || len < ihl) {
            return 0;
        }
        if (kind == V4_TCP) {
            if (p[9] != IPPROTO_TCP || memcmp(p + 12, m->address, 4) != 0) {
                return 0;
            }
            return take_tcp(c, m, p + ihl, len - ihl, p[8]);
        }
        /* ICMP type 3, then the probe's IP header and its first 8 bytes. */
        if (p[9] != IPPROTO_ICMP || len < ihl + 8 + 20 + 8 || p[ihl] != 3) {
            return 0;
        }
        const unsigned char *inner = p + ihl + 8;
        size_t inner_ihl = (size_t)(inner[0] & 0x0F) * 4;
        if (inner_ihl < 20 || inner[9] != IPPROTO_TCP || memcmp(inner + 16, m->address, 4) != 0 ||
            len < ihl + 8 + inner_ihl + 8) {
            return 0;
        }
        return take_quoted(c, m, p[ihl + 1], inner + inner_ihl, p[8]);
    }
    /* IPv6 raw sockets deliver the payload: the source comes as msg_name, the hop limit as a cmsg. */
    const struct sockaddr_in6 *from = hdr->msg_name;
    unsigned char hops = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(hdr); cm != NULL; cm = CMSG_NXTHDR((struct msghdr *)hdr, cm)) {
        if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_HOPLIMIT &&
            cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int value;
            memcpy(&value, CMSG_DATA(cm), sizeof(value));
            hops = (unsigned char)(value < 0 ? 0 : value > 255 ? 255 : value);
        }
    }
    if (kind == V6_TCP) {
        if (hdr->msg_namelen < sizeof(*from) || memcmp(&from->sin6_addr, m->address, 16) != 0) {
            return 0;
        }
        return take_tcp(c, m, p, len, hops);
    }
    /* ICMPv6 type 1, then the probe's IPv6 header (next header at 6, destination at 24). */
    if (len < 8 + 40 + 8 || p[0] != 1 || p[8 + 6] != IPPROTO_TCP || memcmp(p + 8 + 24, m->address, 16) != 0) {
        return 0;
    }
    return take_quoted(c, m, p[1], p + 48, hops);
}

PyDoc_STRVAR(drain_doc,
             "drain(fd, kind, address, index_of, offset, lane, base, rst, syn_ack, icmp)\n"
             "    -> (keys, trynos, codes, ttls)\n\n"
             "Read every reply queued on non-blocking raw socket `fd` (kind 0 IPv4 TCP, 1 IPv4 ICMP,\n"
             "2 IPv6 TCP, 3 IPv6 ICMPv6), keep those that answer a probe of this scan to `address`\n"
             "(cookie and try number checked) and return them as columns: a list of probe keys and\n"
             "bytes of try numbers, response codes and TTLs.");

static PyObject *
py_drain(PyObject *self, PyObject *args)
{
    int fd, kind;
    Py_buffer address, index_of, icmp;
    long long offset, lane;
    unsigned base;
    unsigned char rst, syn_ack;
    if (!PyArg_ParseTuple(args, "iiy*y*LLIbby*:drain", &fd, &kind, &address, &index_of, &offset, &lane,
                          &base, &rst, &syn_ack, &icmp)) {
        return NULL;
    }
    PyObject *result = NULL;
    unsigned char *slots = NULL, *control = NULL;
    struct iovec *iovs = NULL;
    struct mmsghdr *msgs = NULL;
    struct sockaddr_in6 *names = NULL;
    struct columns cols = {NULL, NULL, NULL, NULL, 0, 256};
    size_t control_len = CMSG_SPACE(sizeof(int));
    int six = kind == V6_TCP || kind == V6_ICMP;
    if (kind < V4_TCP || kind > V6_ICMP || address.len != (six ? 16 : 4) ||
        index_of.len != 65536 * (Py_ssize_t)sizeof(int32_t) || icmp.len != 256) {
        PyErr_SetString(PyExc_ValueError, "drain: bad kind, address, port index table or ICMP table");
        goto done;
    }
    struct match m = {address.buf, index_of.buf, offset, (uint64_t)lane, base, rst, syn_ack, icmp.buf};
    slots = PyMem_Malloc(BATCH * SLOT);
    iovs = PyMem_Malloc(BATCH * sizeof(*iovs));
    msgs = PyMem_Malloc(BATCH * sizeof(*msgs)); /* every field is set below before each read */
    if (six) { /* only IPv6 needs the source address and the hop limit beside the data */
        control = PyMem_Malloc(BATCH * control_len);
        names = PyMem_Malloc(BATCH * sizeof(*names));
    }
    cols.keys = PyList_New(0);
    cols.trynos = PyMem_Malloc(cols.cap);
    cols.codes = PyMem_Malloc(cols.cap);
    cols.ttls = PyMem_Malloc(cols.cap);
    if (!slots || (six && (!control || !names)) || !iovs || !msgs || !cols.keys || !cols.trynos ||
        !cols.codes || !cols.ttls) {
        PyErr_NoMemory();
        goto done;
    }
    for (int i = 0; i < BATCH; i++) {
        iovs[i].iov_base = slots + i * SLOT;
        iovs[i].iov_len = SLOT;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (int round = 0; round < MAX_BATCHES; round++) {
        for (int i = 0; i < BATCH; i++) {
            /* recvmmsg overwrites these lengths: reset them every round. */
            msgs[i].msg_hdr.msg_name = six ? &names[i] : NULL;
            msgs[i].msg_hdr.msg_namelen = six ? sizeof(names[i]) : 0;
            msgs[i].msg_hdr.msg_control = six ? control + i * control_len : NULL;
            msgs[i].msg_hdr.msg_controllen = six ? control_len : 0;
            msgs[i].msg_hdr.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        int got;
        Py_BEGIN_ALLOW_THREADS
        got = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        Py_END_ALLOW_THREADS
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                break;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        for (int i = 0; i < got; i++) {
            /* A datagram longer than a slot is truncated: msg_len is its full length. */
            size_t len = msgs[i].msg_len < SLOT ? msgs[i].msg_len : SLOT;
            if (take_packet(&cols, &m, (enum kind)kind, slots + i * SLOT, len, &msgs[i].msg_hdr) < 0) {
                goto done;
            }
        }
        if (got < BATCH) {
            break;
        }
    }
    result = Py_BuildValue("(Oy#y#y#)", cols.keys, (const char *)cols.trynos, cols.n,
                           (const char *)cols.codes, cols.n, (const char *)cols.ttls, cols.n);
done:
    Py_XDECREF(cols.keys);
    PyMem_Free(cols.trynos);
    PyMem_Free(cols.codes);
    PyMem_Free(cols.ttls);
    PyMem_Free(slots);
    PyMem_Free(control);
    PyMem_Free(iovs);
    PyMem_Free(msgs);
    PyMem_Free(names);
    PyBuffer_Release(&address);
    PyBuffer_Release(&index_of);
    PyBuffer_Release(&icmp);
    return result;
}

static PyMethodDef methods[] = {
    {"cookie", py_cookie, METH_VARARGS, cookie_doc},
    {"build_tcp", py_build_tcp, METH_VARARGS, build_tcp_doc},
    {"send_tcp", py_send_tcp, METH_VARARGS, send_tcp_doc},
    {"drain", py_drain, METH_VARARGS, drain_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "portkit.scan._rawio",
    "Batched raw-socket I/O and reply parsing for one-host TCP scans (see _rawio.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__rawio(void)
{
    return PyModule_Create(&module);
}
