"""The one door to litellm: no other module imports it.

litellm fetches its model price table from the network at import unless told to use the copy it
ships with. This module sets that before any import of litellm can happen (settings import it
first thing, so the whole process is covered). The import itself is deferred to the first
`load_litellm()`: it costs seconds, and most of the orchestration package (planning, routing,
summary, metering) never needs it; servers call it while warming up, before taking traffic.
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The offline demo provider's name for litellm: models "pantheon_demo/<alias>" go to it.
DEMO_PROVIDER = "pantheon_demo"


@cache
def load_litellm() -> ModuleType:
    import litellm

    return litellm
