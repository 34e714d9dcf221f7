"""portkit's errors, for every package and for users catching them.

They are defined in `portkit.model.errors`, with the shared vocabulary, so that `portkit.model`
imports nothing outside itself; this module is their stable public path.
"""

from __future__ import annotations

from portkit.model.errors import (
    QUOTE_LIMIT as QUOTE_LIMIT,
)
from portkit.model.errors import (
    PermissionNeeded as PermissionNeeded,
)
from portkit.model.errors import (
    PortkitError as PortkitError,
)
from portkit.model.errors import (
    Terminated as Terminated,
)
from portkit.model.errors import (
    UsageError as UsageError,
)
from portkit.model.errors import (
    quote as quote,
)
