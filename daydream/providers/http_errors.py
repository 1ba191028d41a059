"""How an HTTP provider's errors are treated: retry or not, the wait the server asked for, and
whether the failed attempt was billed.

Shared by every provider that talks HTTP (litellm, the batch APIs). 429 is a rate limit;
408, 409, 425, 5xx (but 501/505), timeouts, dropped connections and empty replies are
transient; any other 4xx is final, and so is a refusal (`RefusedReplyError`: a content filter,
which answers the same prompt the same way). `Retry-After` is read as seconds or an HTTP date,
and `retry-after-ms` wins when present.

Billing (`billing_of`): a reply that came back without usable text (`BilledReplyError`: no
text, a refusal) was answered, and billed for the usage it reports; a 200 whose body could not
be read, or a reply still on its way when the client gave up (a timeout), may have been billed
for an amount nobody knows (`MAYBE_BILLED`). An error status (4xx, 5xx) or a connection that
failed is not billed.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

from daydream.providers import RetryDecision

TRANSIENT_ERRORS = frozenset({"Timeout", "APITimeoutError", "APIConnectionError", "InternalServerError",
                              "ServiceUnavailableError", "BadGatewayError", "EmptyReplyError"})
TRANSIENT_STATUS = frozenset({408, 409, 425, 429})


class BilledReplyError(Exception):
    """An answered reply without usable text: billed for its reported `usage` (None when the
    reply said nothing of its usage), with its `finish_reason` and whatever `text` it had."""

    status_code = None

    def __init__(self, message: str, *, usage: dict | None = None, finish_reason: str | None = None,
                 text: str = ""):
        super().__init__(message)
        self.usage, self.finish_reason, self.text = usage, finish_reason, text


class EmptyReplyError(BilledReplyError):
    """HTTP 200 without any text, and not because the token limit was reached: retried."""


class RefusedReplyError(BilledReplyError):
    """A reply the provider refused to give (finish_reason `content_filter`, or an empty reply
    that says why): the same prompt is refused again, so it is never retried."""


REFUSAL_FINISH_REASONS = frozenset({"content_filter", "refusal", "safety"})
# Errors after which the provider may have answered, and billed, a reply we never read.
MAYBE_BILLED_ERRORS = frozenset({"Timeout", "APITimeoutError", "TimeoutError", "ReadTimeout",
                                 "JSONDecodeError", "MalformedReplyError"})
BILLED, MAYBE_BILLED = "billed", "maybe"


def malformed_body(error: BaseException) -> bool:
    """True for an error raised because a 200's body was not valid JSON (litellm reports it as a
    500 whose message or cause names the decoding error)."""
    seen, current = 0, error
    while current is not None and seen < 5:
        if isinstance(current, ValueError) and type(current).__name__ == "JSONDecodeError":
            return True
        text = str(current)
        if "JSONDecodeError" in text or "Expecting property name" in text or "Unterminated string" in text \
                or "Expecting value" in text:
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


def billing_of(error: BaseException) -> str | None:
    """`BILLED` (an answered reply: its usage is what it cost), `MAYBE_BILLED` (a reply may have
    been made and billed but was never read: a timeout, a malformed 200 body) or None (an error
    status or a failed connection: not billed)."""
    if isinstance(error, BilledReplyError):
        return BILLED
    if type(error).__name__ in MAYBE_BILLED_ERRORS or isinstance(error, TimeoutError) or malformed_body(error):
        return MAYBE_BILLED
    return None


def status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None


def retry_decision(error: BaseException) -> RetryDecision | None:
    """None for a final error (other 4xx, a refusal, or anything that is not a provider error)."""
    if isinstance(error, RefusedReplyError):
        return None
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
