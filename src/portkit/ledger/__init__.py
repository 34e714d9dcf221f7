"""The exposure ledger: what portkit observed about ports, and when, in one SQLite file.

`Ledger.open(path)` opens or creates it (schema versioned, migrated on open; WAL, so a `watch`
daemon and CLI runs write at once). Commands run with `--record` add observations: socket
inventories, scans, firewall rulesets (a fingerprint, and `fw check`'s decisions), diagnoses;
`record_event` adds watch's events. `port_history` tells one port's story; `Ledger.prune`
and `Ledger.observations` are retention and export.

The CLI chooses the file ($XDG_STATE_HOME/portkit/ledger.db by default, `--db PATH`); this
package reads no environment.
"""

from __future__ import annotations

from portkit._lazy import lazy_exports_from_source

TYPE_CHECKING = False

if TYPE_CHECKING:
    from portkit.ledger._facts import (
        inventory_facts as inventory_facts,
        inventory_scope as inventory_scope,
        NetnsScope as NetnsScope,
        Owner as Owner,
        PortFact as PortFact,
        ruleset_fingerprint as ruleset_fingerprint,
    )
    from portkit.ledger._history import (
        Binding as Binding,
        PortHistory as PortHistory,
        build_history as build_history,
        port_history as port_history,
    )
    from portkit.ledger._schema import (
        MIGRATIONS as MIGRATIONS,
        SCHEMA_VERSION as SCHEMA_VERSION,
        LedgerDamaged as LedgerDamaged,
        LedgerMissing as LedgerMissing,
        LedgerTooNew as LedgerTooNew,
    )
    from portkit.ledger._store import (
        DIAGNOSIS as DIAGNOSIS,
        INVENTORY as INVENTORY,
        RULESET as RULESET,
        SCAN as SCAN,
        Event as Event,
        Ledger as Ledger,
        Observation as Observation,
        PruneResult as PruneResult,
        Sighting as Sighting,
    )

__getattr__, __dir__ = lazy_exports_from_source(__name__, __file__)
