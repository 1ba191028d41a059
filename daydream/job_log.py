"""A job's own log file: what happened to one document, in the `log:` file of its job.

Jobs run in threads of one Snakemake process, so the log of one job cannot be a redirection of
stderr or a handler that takes every record. One handler on the `daydream` logger (`_Router`,
added once per process) sends each record to the log file of the job running in the thread
that emitted it, if any: its call's attempts, retries and waits, a reused or restored reply,
the failure. The job's own lines (what was saved, or the error that ended it) go beside them.
Each line is written as it comes, so a long call's log can be read while it runs.
A call the run's call engine made for the document (`daydream.engine`, in its own threads) has
its records handed over when the job takes its answer (`replay`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _Router(logging.Handler):
    """Writes each record to the open log of the job running in the record's thread."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(FORMAT))
        self.sinks: dict[int, _Sink] = {}

    def emit(self, record: logging.LogRecord) -> None:
        sink = self.sinks.get(record.thread)
        if sink is None:
            return
        try:
            sink.write(self.format(record) + "\n")
            sink.flush()
        except Exception:  # noqa: BLE001 - logging's contract: a failed emit is reported, never raised
            self.handleError(record)


_ROUTER: _Router | None = None
_ROUTER_LOCK = threading.Lock()


def _router() -> _Router:
    """The process's router, added to the `daydream` logger on first use (kept at INFO, so the
    job logs get every line whatever the terminal shows)."""
    global _ROUTER
    logger = logging.getLogger("daydream")
    if logger.getEffectiveLevel() > logging.INFO:  # the terminal handlers keep their own level
        logger.setLevel(logging.INFO)
    if _ROUTER is None or _ROUTER not in logger.handlers:  # also when someone cleared the handlers
        with _ROUTER_LOCK:
            if _ROUTER is None:
                _ROUTER = _Router()
            if _ROUTER not in logger.handlers:
                logger.addHandler(_ROUTER)
    return _ROUTER


class JobLog:
    """The open log of one job: `line(text)` writes one line of the job's own."""

    def __init__(self, router: _Router | None):
        self._router = router

    def line(self, text: str, level: int = logging.INFO) -> None:
        if self._router is not None:
            record = logging.LogRecord("daydream.job", level, __file__, 0, text, None, None)
            self._router.handle(record)


class _Sink:
    """A job's log file, unbuffered: each `write` is one `os.write` of the UTF-8 text, so a line
    is in the file as soon as it is written (what a text file opened "w" and flushed after each
    line does, without its buffer and the system calls opening one costs)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, text: str) -> None:
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(self.fd, view):]

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        os.close(self.fd)


_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


def _open(path: str) -> _Sink:
    """The log file, emptied (written afresh for each run of the job); its folder made if missing."""
    try:
        return _Sink(os.open(path, _FLAGS, 0o666))
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return _Sink(os.open(path, _FLAGS, 0o666))


@contextmanager
def document_log(log_path: str | Path | None) -> Iterator[JobLog]:
    """While the job runs, the daydream log records of this thread go to `log_path` (written
    afresh for each run of the job), with INFO lines whatever the terminal shows; an exception
    that ends the job is written there before it propagates."""
    if not log_path:
        yield JobLog(None)
        return
    router, thread = _router(), threading.get_ident()
    sink = _open(os.fspath(log_path))
    router.sinks[thread] = sink
    job = JobLog(router)
    try:
        yield job
    except Exception as error:
        job.line(f"failed: {type(error).__name__}: {' '.join(str(error).split())}", logging.ERROR)
        raise
    finally:
        router.sinks.pop(thread, None)
        sink.close()


def replay(records: list[logging.LogRecord]) -> None:
    """Write records emitted for this thread's document elsewhere (the call engine's threads)
    into the log of the job running in this thread, if one is open."""
    router = _ROUTER
    sink = router.sinks.get(threading.get_ident()) if router is not None else None
    if sink is None:
        return
    try:
        for record in records:
            if record.levelno >= router.level:
                sink.write(router.format(record) + "\n")
        sink.flush()
    except Exception:  # noqa: BLE001 - as in `_Router.emit`: a failed log write is reported, never raised
        for record in records:
            router.handleError(record)
