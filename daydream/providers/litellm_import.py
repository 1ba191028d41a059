"""litellm, imported once per process and only when needed, with the local price map
(`LITELLM_LOCAL_MODEL_COST_MAP=True`: no network fetch) and its telemetry off."""

from __future__ import annotations

import os
import threading

_LITELLM = None
_LOCK = threading.Lock()


def litellm_module():
    """The litellm module (the first call imports it: about 2-3 s and 200 MB)."""
    global _LITELLM
    with _LOCK:
        if _LITELLM is None:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            _LITELLM = litellm
        return _LITELLM
