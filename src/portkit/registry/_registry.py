"""The layered service registry: built-in table, /etc/services, IANA cache, nmap-services.

Layers load lazily, the first time a question needs them, and every answer is a
`Service` that says which layer it came from.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable

from portkit.model import PORT_TRANSPORTS, Transport
from portkit.registry._paths import RegistryPaths, registry_paths
from portkit.registry._service import Service, Source

Loader = Callable[[], list[Service]]
PortQuery = Callable[[int, Transport], list[Service]]

# A layer answers its first questions by reading only the asked port's lines of its source (a few
# ms each: what one-port commands like `explain 22` want); past this many it parses the source
# once and answers from the index (a scan naming 65,535 ports took minutes the other way).
QUERIES_BEFORE_LOAD = 16


class _Layer:
    """One source, indexed by (protocol, port) and by name."""

    def __init__(
        self,
        source: Source,
        loader: Loader,
        query: PortQuery | None = None,
        frequencies: Callable[[Transport], list[tuple[int, float]]] | None = None,
    ) -> None:
        self.source = source
        self._loader = loader
        self._query = query
        self.frequencies = frequencies
        self._loaded = False
        self._queries = 0
        self.services: list[Service] = []
        self._by_port: dict[tuple[Transport, int], list[Service]] = defaultdict(list)
        self._ranges: list[Service] = []
        self._by_name: dict[str, list[Service]] = defaultdict(list)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> _Layer:
        if not self._loaded:
            self._loaded = True
            self.services = self._loader()
            for s in self.services:
                if s.last_port == s.port:
                    self._by_port[(s.protocol, s.port)].append(s)
                else:
                    self._ranges.append(s)
                for name in s.names():
                    self._by_name[name.lower()].append(s)
        return self

    def for_port(self, port: int, protocol: Transport) -> list[Service]:
        if not self._loaded and self._query is not None and self._queries < QUERIES_BEFORE_LOAD:
            self._queries += 1
            return self._query(port, protocol)
        self.load()
        found = list(self._by_port.get((protocol, port), ()))
        found.extend(s for s in self._ranges if s.protocol is protocol and s.covers(port))
        return found

    def by_name(self, name: str) -> list[Service]:
        return list(self.load()._by_name.get(name.lower(), ()))


def _default_layers(paths: RegistryPaths) -> list[_Layer]:
    from portkit.registry._cache import load_cache, query_cache
    from portkit.registry.builtin import load_builtin, query_builtin
    from portkit.registry.nmap import load_nmap_services, nmap_frequencies, query_nmap_services
    from portkit.registry.system import load_etc_services

    cache, nmap = paths.cache_file, paths.nmap_services
    return [
        _Layer(Source.BUILTIN, load_builtin, query_builtin),
        _Layer(Source.SYSTEM, load_etc_services),
        _Layer(Source.IANA, lambda: load_cache(cache), lambda port, proto: query_cache(port, proto, cache)),
        _Layer(
            Source.NMAP,
            lambda: load_nmap_services(nmap),
            lambda port, proto: query_nmap_services(port, proto, nmap),
            lambda proto: nmap_frequencies(proto, nmap),
        ),
    ]


class Registry:
    """Answers "what is port N" and "which port is service X" from layered sources.

    Without `loaders`, the four standard layers, reading the files `paths` names (the
    process-wide `registry_paths()` when None).
    """

    def __init__(
        self, loaders: Iterable[tuple[Source, Loader]] | None = None, *, paths: RegistryPaths | None = None
    ) -> None:
        if loaders is None:
            self._layers = _default_layers(paths or registry_paths())
        else:
            self._layers = [_Layer(src, fn) for src, fn in loaders]

    def layer(self, source: Source) -> list[Service]:
        return [s for layer in self._layers if layer.source is source for s in layer.load().services]

    def sources(self) -> dict[str, int]:
        """How many entries each layer holds (0 for a layer with nothing installed)."""
        return {layer.source.value: len(layer.load().services) for layer in self._layers}

    def for_port(self, port: int, protocol: Transport | None = None) -> list[Service]:
        """Every layer's services on `port`, most trusted layer first."""
        protocols = [protocol] if protocol else list(PORT_TRANSPORTS)
        return [s for layer in self._layers for proto in protocols for s in layer.for_port(port, proto)]

    def name_for(self, port: int, protocol: Transport) -> str:
        """The best single name for a port ('' when no layer knows it)."""
        for index, layer in enumerate(self._layers):
            named = [s for s in layer.for_port(port, protocol) if s.name]
            if not named:
                continue
            # the most common service on the port (builtin), or nmap's most frequent one;
            # among equals, the one the other sources also call this port (ssh, not sftp, on 22)
            best = min((s.commonness or 99, -s.frequency) for s in named)
            ties = [s for s in named if (s.commonness or 99, -s.frequency) == best]
            if len(ties) > 1:
                elsewhere = {
                    name.lower()
                    for later in self._layers[index + 1 :]
                    for s in later.for_port(port, protocol)
                    for name in s.names()
                }
                ties.sort(key=lambda s: not any(n.lower() in elsewhere for n in s.names()))
            return ties[0].name
        return ""

    def builtin_for(self, port: int, protocol: Transport) -> list[Service]:
        """The built-in table's entries covering `port` (its lines for that port alone are read
        while few ports have been asked about: see QUERIES_BEFORE_LOAD)."""
        builtin = [layer for layer in self._layers if layer.source is Source.BUILTIN]
        return [s for layer in builtin for s in layer.for_port(port, protocol)]

    def risk_for(self, port: int, protocol: Transport) -> Service | None:
        """The built-in entry with a risk note for this port, if any."""
        for layer in self._layers:
            if layer.source is Source.BUILTIN:
                for s in layer.for_port(port, protocol):
                    if s.risk:
                        return s
        return None

    def by_name(self, name: str) -> list[Service]:
        return [s for layer in self._layers for s in layer.by_name(name)]

    def ports_for_name(self, name: str) -> list[tuple[int, Transport]]:
        """Ports of the services called `name` (or with that alias), in any layer."""
        seen: dict[tuple[int, Transport], None] = {}
        for s in self.by_name(name):
            if s.last_port - s.port > 1024:
                continue
            for port in range(s.port, s.last_port + 1):
                seen[(port, s.protocol)] = None
        return list(seen)

    def search(self, text: str, *, limit: int = 0) -> list[Service]:
        """Services whose name, alias, category or description contains every word of `text`,
        and, when `text` is a port number, the services on that port.

        The port's services and exact name matches come first, then by layer trust, then by port.
        """
        words = [w for w in re.split(r"\W+", text.lower()) if w]
        if not words:
            return []
        exact = text.strip().lower()
        port = int(exact) if exact.isascii() and exact.isdigit() and len(exact) <= 5 else -1
        scored: list[tuple[int, int, int, Service]] = []
        for rank, layer in enumerate(self._layers):
            for s in layer.load().services:
                if s.port <= port <= s.last_port:
                    scored.append((-1, rank, s.port, s))
                    continue
                names = [n.lower() for n in s.names()]
                hay = " ".join([*names, s.category, s.description.lower()])
                if all(w in hay for w in words):
                    tier = 0 if exact in names else 1 if any(exact in n for n in names) else 2
                    scored.append((tier, rank, s.port, s))
        scored.sort(key=lambda t: t[:3])
        results = [t[3] for t in scored]
        return results[:limit] if limit else results

    def top_ports(self, count: int, protocol: Transport) -> list[int]:
        """The `count` ports most often found open: nmap's frequencies when installed,
        otherwise the built-in table's commonness ranking, then the rest in port order."""
        ranked: dict[int, None] = {}
        for layer in self._layers:
            if layer.source is Source.NMAP:
                if layer.frequencies is not None and not layer.loaded:
                    pairs = layer.frequencies(protocol)
                else:
                    pairs = [(s.port, s.frequency) for s in layer.load().services if s.protocol is protocol]
                for port, _ in sorted((p for p in pairs if p[1] > 0), key=lambda p: (-p[1], p[0])):
                    ranked[port] = None
        if not ranked:
            for layer in self._layers:
                if layer.source is Source.BUILTIN:
                    entries = [s for s in layer.load().services if s.protocol is protocol]
                    for s in sorted(entries, key=lambda s: (s.commonness, s.port)):
                        if len(s.ports.split("-")) == 1:
                            ranked[s.port] = None
        port = 1
        while len(ranked) < count and port <= 65535:
            ranked.setdefault(port, None)
            port += 1
        return list(ranked)[:count]


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The process-wide registry over this machine's sources, at `registry_paths()`."""
    return Registry()
