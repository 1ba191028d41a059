"""How an HTTP provider's errors are treated: retry or not, and the wait the server asked for.

Shared by every provider that talks HTTP (litellm, the batch APIs). 429 is a rate limit;
408, 409, 425, 5xx (but 501/505), timeouts, dropped connections and empty replies are
transient; any other 4xx is final. `Retry-After` is read as seconds or an HTTP date, and
`retry-after-ms` wins when present.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

from daydream.providers import RetryDecision

TRANSIENT_ERRORS = frozenset({"Timeout", "APITimeoutError", "APIConnectionError", "InternalServerError",
                              "ServiceUnavailableError", "BadGatewayError", "EmptyReplyError"})
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


class EmptyReplyError(Exception):
    """HTTP 200 without any text, and not because the token limit was reached: retried."""

    status_code = None


def status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def retry_decision(error: BaseException) -> RetryDecision | None:
    """None for a final error (other 4xx, or anything that is not a provider error)."""
    status, name = status_of(error), type(error).__name__
    if status == 429 or name == "RateLimitError":
        return RetryDecision("rate_limit", retry_after_s(error))
    transient = (name in TRANSIENT_ERRORS or status in TRANSIENT_STATUS
                 or (status is not None and 500 <= status < 600 and status not in (501, 505)))
    return RetryDecision("transient", retry_after_s(error)) if transient else None


def _headers(error: BaseException) -> dict[str, str]:
    """The HTTP response headers carried by a litellm/OpenAI SDK error, lower-cased."""
    for source in (getattr(error, "litellm_response_headers", None),
                   getattr(getattr(error, "response", None), "headers", None),
                   getattr(error, "headers", None)):
        if source:
            return {str(k).lower(): str(v) for k, v in source.items()}
    return {}


def retry_after_s(error: BaseException) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` given as seconds
    or as an HTTP date; None when absent or unreadable."""
    headers = _headers(error)
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass  # an unreadable header falls through to Retry-After, then to plain backoff
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if email.utils.parsedate_tz(value) else None
        return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when and when.tzinfo else None
