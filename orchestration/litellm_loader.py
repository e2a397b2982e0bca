"""The one door to litellm.

litellm fetches its model price table from the network at import unless told to use the
copy it ships with, so the environment default is set here, before any import of litellm can
happen through this module. The import itself is deferred: it costs seconds, and most of the
orchestration package (planning, routing, summary, metering) never needs it.
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@cache
def load_litellm() -> ModuleType:
    import litellm

    return litellm
