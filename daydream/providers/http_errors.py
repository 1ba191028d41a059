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


# -- what happened, in words ------------------------------------------------------------------
# litellm wraps transport failures in classes that carry an invented status (APIConnectionError
# 500, InternalServerError 500, Timeout 408); the real cause is further down the chain.
_NO_RESPONSE_CLASSES = frozenset({"APIConnectionError", "Timeout", "APITimeoutError"})
_CLOSED_NAMES = frozenset({"ServerDisconnectedError", "RemoteProtocolError", "ClientOSError", "ReadError"})
_CONNECT_NAMES = frozenset({"ConnectError", "ClientConnectorError", "ClientConnectorDNSError", "ConnectTimeout"})


def chain(error: BaseException) -> list[BaseException]:
    """`error` and the exceptions it was raised from (`__cause__`, else `__context__`)."""
    links: list[BaseException] = []
    while error is not None and all(error is not seen for seen in links):
        links.append(error)
        error = error.__cause__ or error.__context__
    return links


def _transport_failure(links: list[BaseException], timeout_s: float | None) -> str | None:
    """What went wrong below HTTP (no response was received), or None."""
    import socket

    names = {type(link).__name__ for link in links}
    where = _address(links)
    if any(isinstance(link, socket.gaierror) or type(link).__name__ == "ClientConnectorDNSError" for link in links):
        return f"could not resolve host {where.split(':')[0] or '(unknown)'}"
    if any(isinstance(link, ConnectionRefusedError) for link in links):
        return f"connection refused by {where or 'the server'}"
    if any(isinstance(link, TimeoutError) or "Timeout" in type(link).__name__ for link in links):
        return f"timed out after {timeout_s:g} s" if timeout_s else "timed out"
    if names & _CONNECT_NAMES or any(isinstance(link, ConnectionError) for link in links):
        return f"could not connect to {where or 'the server'}"
    if names & _CLOSED_NAMES:
        return f"the connection to {where or 'the server'} was closed before a response"
    return None


def _address(links: list[BaseException]) -> str:
    """host:port of the failed connection, from aiohttp's or httpx's error, '' if unknown."""
    import re

    for link in links:
        host = getattr(link, "host", None)
        if isinstance(host, str) and host:
            port = getattr(link, "port", None)
            return f"{host}:{port}" if port else host
        found = re.search(r"host ([\w.\-\[\]:]+?):(\d+)", str(link))
        if found:
            return f"{found.group(1)}:{found.group(2)}"
        if type(link).__module__.startswith("httpx"):
            try:
                url = link.request.url
            except (AttributeError, RuntimeError):
                continue
            return f"{url.host}:{url.port}" if url.port else str(url.host)
    return ""


def received_status(error: BaseException) -> int | None:
    """The HTTP status the server actually sent; None when no response was received (a
    transport failure, or a class litellm gives an invented status)."""
    links = chain(error)
    if type(error).__name__ in _NO_RESPONSE_CLASSES or _transport_failure(links, None) is not None:
        return None
    return status_of(error)


def describe(error: BaseException, timeout_s: float | None = None) -> str:
    """What happened, for a person: `could not resolve host api.x.com (APIConnectionError, no
    HTTP response)`, `connection refused by 127.0.0.1:8080 (...)`, `timed out after 900 s
    (...)`, or `RateLimitError (HTTP 429)` when a response was received."""
    name = type(error).__name__
    what = _transport_failure(chain(error), timeout_s)
    if what is not None or name in _NO_RESPONSE_CLASSES:
        return f"{what or 'no response'} ({name}, no HTTP response)"
    status = status_of(error)
    return f"{name} (HTTP {status})" if status else name


def root_message(error: BaseException) -> str:
    """The innermost exception's text: the cause itself, not litellm's wrapping."""
    return str(chain(error)[-1])
