"""A network lab of namespaces on this machine, for tests and benchmarks (requires root).

Declare hosts with listeners, firewall rules and links in a `LabSpec`, then
`with Lab(spec) as lab:`; run tools inside a host with `lab.run("client", [...])`, or move
this thread in with `with lab.inside("client"):`. Addresses: `lab.address("web")`.
"""

from portkit.lab._lab import Lab, lab
from portkit.lab._spec import (
    CLIENT,
    DEFAULT_SUBNET,
    Action,
    Host,
    LabSpec,
    Link,
    Listener,
    Reply,
    Rule,
)

__all__ = [
    "CLIENT",
    "DEFAULT_SUBNET",
    "Action",
    "Host",
    "Lab",
    "LabSpec",
    "Link",
    "Listener",
    "Reply",
    "Rule",
    "lab",
]
