"""Port forwarding (`portkit forward`): TCP and UDP, correct half-close and resets, and fast.

    from portkit.forward import make_rule, serve
    serve([make_rule("8080", "10.0.0.5:80")])          # until SIGTERM

TCP runs on the splice engine (zero-copy splice(2) on an epoll loop) where the platform
has it and on asyncio Protocols otherwise; UDP keeps one upstream socket per client. The
connection lifecycle is the pure state machine in `_state`; limits, allow-lists and the
PROXY protocol come with each `ForwardRule`. The library reads no environment variable:
`portkit forward` passes the control directory (`runtime_dir(os.environ)`, where `--stats`
looks), systemd's $NOTIFY_SOCKET, the splice engine's bulk threshold, copy mode and number
of loops (`loops`: epoll loop threads, each with its own SO_REUSEPORT listener) as options.
"""

from portkit.forward._congestion import check as check_congestion
from portkit.forward._control import query_stats, runtime_dir
from portkit.forward._forwarder import ENGINES, Forwarder, Listening, choose_engine, serve
from portkit.forward._log import EventLog
from portkit.forward._proxyproto import parse_proxy_header, proxy_header
from portkit.forward._rules import (
    MAX_TIMEOUT,
    ForwardRule,
    Limits,
    Overflow,
    ProxyProtocol,
    load_config,
    make_limits,
    make_rule,
    parse_config,
    parse_listen,
    parse_target,
)
from portkit.forward._splice import COPY_MODES
from portkit.forward._state import TRANSITIONS, ConnectionState, Event, ForwardAction, State
from portkit.forward._stats import ForwarderStats, RuleStats
from portkit.forward._udptable import ClientTable

# The names `portkit` exports these under, where a bare `serve` or `make_rule` would not say what.
serve_forward = serve
forward_rule = make_rule
load_forward_config = load_config
forward_stats = query_stats

__all__ = [
    "COPY_MODES",
    "ENGINES",
    "MAX_TIMEOUT",
    "TRANSITIONS",
    "ClientTable",
    "ConnectionState",
    "Event",
    "EventLog",
    "ForwardAction",
    "ForwardRule",
    "Forwarder",
    "ForwarderStats",
    "Limits",
    "Listening",
    "Overflow",
    "ProxyProtocol",
    "RuleStats",
    "State",
    "check_congestion",
    "choose_engine",
    "forward_rule",
    "forward_stats",
    "load_config",
    "load_forward_config",
    "make_limits",
    "make_rule",
    "parse_config",
    "parse_listen",
    "parse_proxy_header",
    "parse_target",
    "proxy_header",
    "query_stats",
    "runtime_dir",
    "serve",
    "serve_forward",
]
