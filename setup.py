"""Build hook for portkit's optional C accelerators; everything else is in pyproject.toml.

Each extension speeds up one hot loop of a capability that also has a pure-Python path, so
`optional=True`: without a compiler the install still succeeds and portkit runs in pure Python.
The capability that owns an extension says which path ran (see its module docstring).
"""

from setuptools import Extension, setup

EXTENSIONS: list[Extension] = [
    # Extension("portkit.<capability>._<name>", ["src/portkit/<capability>/_<name>.c"], optional=True),
    # `portkit ls --all --json`: netlink messages to JSON lines (portkit.sockets._netlink, RawRows).
    Extension("portkit.sockets._diagrows", ["src/portkit/sockets/_diagrows.c"], optional=True),
    # `portkit ls -p`, `portkit who`: the socket inodes among a process's fd links (portkit.sockets._procs).
    Extension("portkit.sockets._fdlinks", ["src/portkit/sockets/_fdlinks.c"], optional=True),
    # SYN/ACK scans of one host: probes out per sendmmsg, replies parsed and cookie-checked per recvmmsg.
    Extension("portkit.scan._rawio", ["src/portkit/scan/_rawio.c"], optional=True),
    # connect() scans of one host: a batch of first tries' connect() calls per call.
    Extension("portkit.scan._connectio", ["src/portkit/scan/_connectio.c"], optional=True),
    # `portkit forward`: the splice engine's loop turn (epoll_wait + small-message copies) without the GIL.
    Extension("portkit.forward._quickio", ["src/portkit/forward/_quickio.c"], optional=True),
]

setup(ext_modules=EXTENSIONS)
