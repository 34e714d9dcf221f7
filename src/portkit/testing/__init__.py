"""A lab of network namespaces on this machine, for testing firewalls, services and scanners.

portkit's own tests and benchmarks run against it, and so can yours: load your nftables rules
into a lab host and probe it from the client, start your service in a namespace and scan it,
or put a delayed, lossy link in front of a host and see what a tool reports. Root is needed
(namespaces, veth and TAP devices, nftables); nothing outside the lab's namespaces is touched,
and everything it made is removed on exit, even on failure.

Two levels:

- `LabSpec` + `Lab`: declare hosts (`LabHost`) with listeners (`LabListener`), firewall rules
  (`LabRule`, `LabAction`) and links with delay and loss (`LabLink`); `with Lab(spec) as lab:`
  builds them behind one bridge, a `client` host included. `lab.run("client", [...])` runs a
  tool in a host, `with lab.inside("web"):` moves this thread in, `lab.address("web")` is a
  host's address (from TEST-NET-2, routed nowhere outside the lab).
- `HomeSpec` + `HomeLab` (`home_lab`): a home network, an `outside` host, a NAT `router`
  (WAN `wan0`, LAN bridge `br-lan`, masquerade) and LAN hosts behind it, for port forwards,
  UPnP/NAT-PMP/PCP daemons and hairpin; `echo_server` and `exchange` move real data through it.
- `LabNamespace` and `connect`: one namespace (loopback up, ICMP rate limits off), and a veth pair
  with addresses and pinned neighbours between two, for topologies a spec does not describe.

Every namespace name ends in a suffix unique to the process and the lab (`unique_name`: the
process id and random digits), so two test runs on one machine never collide.
"""

from portkit.testing._faults import CASES as FAULT_CASES
from portkit.testing._faults import FaultCase, ReachLab, reach_lab
from portkit.testing._home import HomeLab, HomeSpec, home_lab
from portkit.testing._lab import Lab, lab
from portkit.testing._netns import LabNamespace, connect, enter_namespace, inside, unique_name
from portkit.testing._spec import (
    CLIENT,
    DEFAULT_SUBNET,
    DEFAULT_SUBNET6,
    LabAction,
    LabHost,
    LabLink,
    LabListener,
    LabReply,
    LabRule,
    LabSpec,
)

__all__ = [
    "CLIENT",
    "DEFAULT_SUBNET",
    "DEFAULT_SUBNET6",
    "FAULT_CASES",
    "FaultCase",
    "HomeLab",
    "HomeSpec",
    "Lab",
    "LabAction",
    "LabHost",
    "LabLink",
    "LabListener",
    "LabNamespace",
    "LabReply",
    "LabRule",
    "LabSpec",
    "ReachLab",
    "connect",
    "enter_namespace",
    "home_lab",
    "inside",
    "lab",
    "reach_lab",
    "unique_name",
]
