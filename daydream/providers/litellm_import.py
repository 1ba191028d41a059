"""litellm, imported once per process and only when needed, with the local price map
(`LITELLM_LOCAL_MODEL_COST_MAP=True`: no network fetch) and its telemetry off.

Requests go through litellm's async client, whose aiohttp connector reads its connection
limits from the environment when litellm is imported (defaults 1,000 in all and 500 per
host). They are raised to `MAX_CONNECTIONS` unless set already, so the largest
`llm.max_concurrency` the config allows never waits for a connection; the caps themselves are
`daydream.limits`'."""

from __future__ import annotations

import os
import threading

MAX_CONNECTIONS = 1024  # at least the config schema's maximum llm.max_concurrency
_LITELLM = None
_LOCK = threading.Lock()


def litellm_module():
    """The litellm module (the first call imports it: about 2-3 s and 200 MB)."""
    global _LITELLM
    with _LOCK:
        if _LITELLM is None:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            for variable in ("AIOHTTP_CONNECTOR_LIMIT", "AIOHTTP_CONNECTOR_LIMIT_PER_HOST"):
                os.environ.setdefault(variable, str(MAX_CONNECTIONS))
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            _LITELLM = litellm
        return _LITELLM
