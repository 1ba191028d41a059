"""A job's own log file: what happened to one document, in the `log:` file of its job.

Jobs run in threads of one Snakemake process, so the log of one job cannot be a redirection of
stderr or a handler that takes every record: `document_log` attaches a handler to the
`daydream` logger that keeps only the records emitted by the job's own thread (its call's
attempts, retries and waits, a reused or restored reply, the failure), and writes the job's own
lines (what was saved, or the error that ended it) beside them. A call the run's call engine
made for the document (`daydream.engine`, in its own threads) has its records handed over when
the job takes its answer (`replay`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(message)s"
_OPEN: dict[int, logging.Handler] = {}  # thread id -> the open job log of the job running in it


class _ThisThread(logging.Filter):
    """Only the records emitted by the thread that created the filter."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread


class JobLog:
    """The open log of one job: `line(text)` writes one line of the job's own."""

    def __init__(self, handler: logging.Handler | None):
        self._handler = handler

    def line(self, text: str, level: int = logging.INFO) -> None:
        if self._handler is not None:
            record = logging.LogRecord("daydream.job", level, __file__, 0, text, None, None)
            self._handler.handle(record)


@contextmanager
def document_log(log_path: str | Path | None) -> Iterator[JobLog]:
    """While the job runs, the daydream log records of this thread go to `log_path` (written
    afresh for each run of the job), with INFO lines whatever the terminal shows; an exception
    that ends the job is written there before it propagates."""
    if not log_path:
        yield JobLog(None)
        return
    path = Path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    handler.addFilter(_ThisThread())
    logger = logging.getLogger("daydream")
    if logger.getEffectiveLevel() > logging.INFO:  # the terminal handlers keep their own level
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    _OPEN[threading.get_ident()] = handler
    job = JobLog(handler)
    try:
        yield job
    except Exception as error:
        job.line(f"failed: {type(error).__name__}: {' '.join(str(error).split())}", logging.ERROR)
        raise
    finally:
        _OPEN.pop(threading.get_ident(), None)
        logger.removeHandler(handler)
        handler.close()


def replay(records: list[logging.LogRecord]) -> None:
    """Write records emitted for this thread's document elsewhere (the call engine's threads)
    into the log of the job running in this thread, if one is open."""
    handler = _OPEN.get(threading.get_ident())
    if handler is None:
        return
    for record in records:
        if record.levelno >= handler.level:
            handler.acquire()
            try:
                handler.emit(record)
            finally:
                handler.release()
