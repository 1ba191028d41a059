"""What a run prints on the terminal: a Snakemake logger plugin (snakemake-interface-logger-plugins 2.x).

The workflow profile selects it (`logger: [daydream]`). Snakemake 9 finds a logger plugin as a
top-level package named `snakemake_logger_plugin_<name>` that `pkgutil.iter_modules` lists; this
project ships `snakemake_logger_plugin_daydream`, which only re-exports `LogHandler` from here
(the Makefile installs the checkout with `editable_mode=compat`, so that package is on the
path). Snakemake builds the handler when it sets up logging, before the Snakefile is parsed, and
with a plugin that writes to the terminal it adds no terminal handler of its own: `LogHandler`
is Snakemake's terminal (its own `ColorizingTextHandler`, its default filter and formatter) plus
the readable run. Snakemake's log file (`.snakemake/log/`) is a handler of its own and keeps
everything.

The readable run is on when the profile's `quiet: [rules, host]` is in effect and `--verbose`
is not given. The quiet choices drop the per-job blocks (and the `rule all` block listing every
gens file); `TerminalFilter` also drops the per-job lines no quiet choice covers (`Select jobs
to execute...`, `Execute N jobs...`, `Finished jobid`, `N of M steps done`) and shows the first
`SHOWN_JOB_ERRORS` job errors and the first budget stop; daydream's own log lines go to the
terminal as warnings only (`runtime.configure_logging`, set up here too). `--quiet host` brings
Snakemake's per-job output back, `--verbose` also its debug lines and daydream's line per call.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

from daydream.errors import short_user_error
from daydream.runtime import configure_logging

SHOWN_JOB_ERRORS = 10  # job errors shown on the terminal before the rest are only counted


def readable(quiet, verbose: bool) -> bool:
    """Whether the readable run is on: Snakemake is quiet about rules and not verbose. `quiet` is
    Snakemake's set of quiet choices (`Quietness` members or their names)."""
    names = {getattr(q, "name", str(q)).lower() for q in (quiet or ())}
    return "rules" in names and not verbose


class TerminalFilter(logging.Filter):
    """Drops the per-job lines, shows the first job errors and the first budget stop (the
    summary counts the rest). Writes its one note about hidden errors to `stream`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._chatter_events = frozenset({LogEvent.JOB_STARTED, LogEvent.JOB_FINISHED, LogEvent.PROGRESS})
        self._chatter_messages = frozenset({"Select jobs to execute..."})
        self._stream = stream
        self._lock = threading.Lock()
        self.job_errors = 0
        self.budget_stops = 0

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if event in self._chatter_events:
            return False
        if event is None and isinstance(record.msg, str) and record.msg in self._chatter_messages:
            return False
        if event == LogEvent.ERROR and getattr(record, "exception", None) == "RuleException":
            return self._job_error(str(record.msg))
        return True

    def _job_error(self, text: str) -> bool:
        with self._lock:
            if "BudgetReached" in text:
                self.budget_stops += 1
                return self.budget_stops == 1
            self.job_errors += 1
            if self.job_errors == SHOWN_JOB_ERRORS + 1:
                print(f"daydream: more job errors are not shown here (the first {SHOWN_JOB_ERRORS} are above); the "
                      "summary at the end counts them and says where each is recorded",
                      file=self._stream or sys.stderr, flush=True)
            return self.job_errors <= SHOWN_JOB_ERRORS


def _briefly(record: logging.LogRecord) -> logging.LogRecord:
    """A `UserError`'s report as `ClassName: message`, without Snakemake's frames and wrappers
    (`daydream.errors`); the log file keeps them. Any other record as it is."""
    if record.levelno < logging.ERROR or not isinstance(record.msg, str) or record.args:
        return record
    short = short_user_error(record.msg)
    if short is None:
        return record
    brief = logging.makeLogRecord(record.__dict__)
    brief.msg = short
    return brief


class LogHandler(LogHandlerBase):
    """Snakemake's terminal output, through `TerminalFilter` when the run is readable."""

    def __post_init__(self) -> None:
        from snakemake.logging import ColorizingTextHandler  # Snakemake's own terminal handler

        settings = self.common_settings
        self.terminal = ColorizingTextHandler(nocolor=settings.nocolor,
                                              stream=sys.stdout if settings.stdout else sys.stderr)
        self.readable = readable(settings.quiet, settings.verbose)
        self.keep = TerminalFilter(self.terminal.stream) if self.readable else None
        configure_logging(logging.WARNING if self.readable else logging.INFO)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 - logging's name
        """Snakemake gives its default formatter to a plugin without one: the terminal uses it."""
        super().setFormatter(fmt)
        self.terminal.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        if self.keep is None or self.keep.filter(record):
            self.terminal.emit(_briefly(record))

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return False  # Snakemake's default filter (quiet choices, verbose, dry run) applies first

    @property
    def has_formatter(self) -> bool:
        return False

    @property
    def needs_rulegraph(self) -> bool:
        return False
