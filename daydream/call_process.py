"""The call engine's model calls in a process of their own, so they use a core of their own.

Why: litellm spends about 6 ms of CPU on each call (the request built, the reply parsed, its
logging). On the engine's loop in the Snakemake process that CPU held the GIL Snakemake's
scheduler needs, so at caps of a few hundred the two shared one core while the other idled.
Here (`python -m daydream.call_process`, started by `CallProcess.start` when a run's engine has
documents to call, in `onstart:`, so its imports overlap with the run's start) the calls run on
an asyncio loop of their own: `calls.acall_model`, exactly as the engine made them.

Who does what. The Snakemake process (`daydream.engine`) keeps everything that is the run's:
the saved-reply lookup, the budget guard's admission and accounting, the caps (`Run.limits`, a
slot held for the whole call: never more calls in flight than the cap), the records of
llm_calls.jsonl and llm_errors.jsonl. This process makes the call and, before it answers,
saves the reply with the ledger's own function (`ledger.save_first`; a failed call's paid reply
too, `ledger.keep_failed_reply`): a reply that came back is on disk whatever happens to the
Snakemake process after (its line is then appended by the next run that reads it,
`ledger.recover_record`). A failed attempt the provider may have billed is sent back at once
(`billed`) and the call waits for the answer: recorded and counted (`ledger.record_attempt`),
or the exception that ends it (`BudgetReached`). The daydream log lines of a call (its call,
retries, failure) come back with its answer and are emitted again in the Snakemake process as
the document's (`Engine`'s log capture, then its job's log).

The protocol: pickled frames, each a 4-byte length then the pickle, over a socket pair (the
child's end passed as a file descriptor). Snakemake process -> call process: `("call", id,
request, member, prompt, paths)`, `("billed-ok", id)`, `("billed-stop", id, error)`. Call process
-> Snakemake process: `("ready", import_s, rss_mb)`, `("prices", entries)` (a model's price-map
entry, sent before its first call's other frames, `pricing.learn_entries`: the Snakemake process
prices replies, billed attempts and cache savings without importing litellm), `("billed", id,
attempt)`, `("back", id)`
(the reply is back: its slot of the caps is free while it is saved), `("done", id, completion,
call_id, saved, not_kept, records)`, `("failed", id, error, records)`.

Ends: the Snakemake process closing its end (the run's end, or the process killed by any
signal: the kernel closes it) stops this process starting calls; calls in flight get
`GRACE_S` to come back and be saved, then it exits. Ctrl-C (SIGINT, sent to the whole process
group by a terminal) is the Snakemake process's to handle; SIGTERM is taken as the end. A call
process that dies fails its calls in flight with `CallProcessDied` (a reply it saved is found
by the next run); the engine then makes the remaining calls on its own loop, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from daydream import calls, ledger, pricing
from daydream.limits import ConcurrencyLimits
from daydream.run import BudgetReached

log = logging.getLogger(__name__)

GRACE_S = 10.0  # after the Snakemake process is gone, calls in flight get this long to come back
_HEADER = struct.Struct("!I")


class CallProcessDied(RuntimeError):
    """The call process ended while this call was in flight; the next run calls it again (or
    finds the reply it saved)."""


# -- frames ------------------------------------------------------------------------------------------
async def _read(reader: asyncio.StreamReader):
    """The next frame, or None at the end of the stream."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def _write(writer: asyncio.StreamWriter, frame: tuple) -> None:
    data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(_HEADER.pack(len(data)) + data)


def portable(error: BaseException) -> BaseException:
    """`error` as it can cross the boundary: itself when it pickles and unpickles, else a
    RuntimeError with its type and text; a bug carries its traceback in this process as a note."""
    if not isinstance(error, (calls.LLMCallError, BudgetReached)):
        error.add_note("in the call process:\n" + "".join(traceback.format_exception(error)).rstrip())
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any exception can be unpicklable: its text crosses instead
        stand_in = RuntimeError(f"{type(error).__name__}: {error}")
        for note in getattr(error, "__notes__", ()):
            stand_in.add_note(note)
        return stand_in


# -- the Snakemake process's side --------------------------------------------------------------------
class CallProcess:
    """The call process of one engine, driven from the engine's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_billed_pool) -> None:
        self._loop, self._pool = loop, on_billed_pool
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daydream.call_process", str(theirs.fileno())], pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL, stdout=2)  # litellm's prints go where the run's messages go
        theirs.close()
        self._socket = ours
        self._pending: dict[int, tuple[asyncio.Future, Callable]] = {}
        self._next = 0
        self.dead: str | None = None  # why it ended, once it has
        self.ready: tuple[float, float] | None = None  # the child's import seconds and RSS MB then
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.run_coroutine_threadsafe(self._connect(), loop)

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop, on_billed_pool) -> CallProcess:
        return cls(loop, on_billed_pool)

    async def _connect(self) -> None:
        reader, self._writer = await asyncio.open_connection(sock=self._socket)
        self._reading = asyncio.create_task(self._read_all(reader))

    async def call(self, request: dict, member, prompt, paths, on_billed: Callable[[calls.Attempt], None],
                   on_back: Callable[[], None]) -> tuple:
        """One call made by the call process: (completion, call id, saved path or None,
        ReplyNotKept message or ""), its log records emitted here first; `on_back` runs as soon
        as its reply is back there (before it is saved). Raises what the call raised there, or
        CallProcessDied."""
        await asyncio.wrap_future(self._connected)
        if self.dead:
            raise CallProcessDied(self.dead)
        self._next += 1
        key, future = self._next, self._loop.create_future()
        self._pending[key] = (future, on_billed, contextvars.copy_context(), on_back)  # the document's context
        try:
            _write(self._writer, ("call", key, request, member, prompt, paths))
            try:
                await self._writer.drain()
            except ConnectionError as error:
                raise CallProcessDied(self.dead or f"the call process's connection failed: {error}") from error
            kind, outcome, records = await future
        finally:
            self._pending.pop(key, None)
        _emit(records)  # in the document's task: the engine's capture keeps them for its job's log
        if kind == "failed":
            raise outcome
        return outcome

    async def _read_all(self, reader: asyncio.StreamReader) -> None:
        while (frame := await _read(reader)) is not None:
            kind, rest = frame[0], frame[1:]
            if kind == "prices":
                pricing.learn_entries(rest[0])
                continue
            if kind == "ready":
                self.ready = rest
                log.debug("call process %d ready: imports %.2fs, %.0f MB", self.process.pid, *rest)
                continue
            pending = self._pending.get(rest[0])
            if pending is None:
                continue
            future, on_billed, context, on_back = pending
            if kind == "back":
                on_back()
            elif kind == "billed":
                asyncio.create_task(self._billed(rest[0], on_billed, context, rest[1]))
            elif not future.done():
                future.set_result((kind, rest[1:5] if kind == "done" else rest[1], rest[-1]))
        await self._ended()

    async def _billed(self, key: int, on_billed, context: contextvars.Context, attempt: calls.Attempt) -> None:
        try:
            await self._loop.run_in_executor(self._pool, context.run, on_billed, attempt)
            frame = ("billed-ok", key)
        except Exception as error:  # noqa: BLE001 - BudgetReached (or a record that failed) ends the call there
            frame = ("billed-stop", key, portable(error))
        if not self.dead:
            _write(self._writer, frame)

    async def _ended(self) -> None:
        self.dead = f"the call process (pid {self.process.pid}) closed its connection"
        try:
            code = await self._loop.run_in_executor(None, self.process.wait, 5)
        except subprocess.TimeoutExpired:
            code = "its connection closed, the process still running"
        self.dead = (f"the call process (pid {self.process.pid}) ended ({_exit(code)}) while this call was in "
                     f"flight; a reply that had come back is saved and found by the next run, which makes the "
                     f"others again")
        for future, *_ in list(self._pending.values()):
            if not future.done():
                future.set_exception(CallProcessDied(self.dead))

    async def close(self) -> None:
        """No more calls: the call process ends once its calls in flight are saved."""
        await asyncio.wrap_future(self._connected)
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()

    def end_requests(self) -> None:
        """From any thread, without the loop: what `close` tells the call process (no call
        follows; it saves its calls in flight, for GRACE_S at most, then exits), for a loop that
        is stuck or gone. A socket already closed has told it."""
        try:
            self._socket.shutdown(socket.SHUT_WR)
        except OSError as error:
            log.debug("call process %d: its connection was closed already (%s)", self.process.pid, error)

    def wait(self, timeout: float) -> None:
        """Until the call process has ended (killed after `timeout` seconds)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _exit(code) -> str:
    if isinstance(code, int) and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}" if isinstance(code, int) else str(code)


def _emit(records: list[logging.LogRecord]) -> None:
    """The call's log records, emitted here as if made here (the engine's capture keeps them)."""
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


# -- the call process ----------------------------------------------------------------------------------
_CALL: contextvars.ContextVar[int | None] = contextvars.ContextVar("daydream_call_process_call", default=None)


class _Records(logging.Handler):
    """The daydream log records of each call (by its id), formatted, to send back."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.by_call: dict[int, list[logging.LogRecord]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        key = _CALL.get()
        if key is None:
            return
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.by_call[key].append(record)


class _Server:
    def __init__(self, writer: asyncio.StreamWriter, records: _Records) -> None:
        self._writer, self._records = writer, records
        self._limits: ConcurrencyLimits | None = None
        self._billed: dict[int, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()
        self._priced: set[tuple[str, str]] = set()

    def start(self, key: int, request: dict, member, prompt, paths) -> None:
        if self._limits is None:  # a bound of its own besides the Snakemake process's caps
            self._limits = ConcurrencyLimits(request["settings"].max_concurrency)
        priced = (calls.route_of(request["row"], request["settings"]), request["row"].model)
        if priced not in self._priced:  # before any frame of this call that the other side prices
            self._priced.add(priced)
            self._send(("prices", pricing.price_map_entries(*priced)))
        task = asyncio.create_task(self._call(key, request, member, prompt, paths))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def billed_answer(self, key: int, error: BaseException | None) -> None:
        future = self._billed.pop(key, None)
        if future is not None and not future.done():
            future.set_result(error)

    async def _call(self, key: int, request: dict, member, prompt, paths) -> None:
        _CALL.set(key)

        async def on_billed(attempt: calls.Attempt) -> None:
            self._billed[key] = future = asyncio.get_running_loop().create_future()
            self._send(("billed", key, attempt))
            error = await future
            if error is not None:
                raise error

        try:
            done = await calls.acall_model(**request, limits=self._limits, on_billed=on_billed)
        except calls.LLMCallError as error:
            try:
                await asyncio.to_thread(ledger.keep_failed_reply, paths, member, prompt, error)
            except BaseException as unsaved:  # noqa: BLE001 - its job fails with this one
                error = unsaved
            self._send(("failed", key, portable(error), self._records.by_call.pop(key, [])))
            return
        except Exception as error:  # noqa: BLE001 - its job fails with it
            self._send(("failed", key, portable(error), self._records.by_call.pop(key, [])))
            return
        self._send(("back", key))  # its slot of the caps is free: the next call may be sent
        # Saved before anything else: on disk before the Snakemake process hears of it.
        try:
            call_id, saved, not_kept = await asyncio.to_thread(ledger.save_first, paths, member, prompt, done)
        except Exception as error:  # noqa: BLE001 - a bug: the paid reply is still counted and recorded there
            log.exception("%s: the call process could not save its reply", member.gen_id)
            call_id, saved = ledger.new_call_id(prompt), None
            not_kept = f"{member.gen_id}: the call process could not save its reply: {type(error).__name__}: {error}"
        self._send(("done", key, done, call_id, saved, not_kept, self._records.by_call.pop(key, [])))

    def _send(self, frame: tuple) -> None:
        if not self._writer.is_closing():
            _write(self._writer, frame)


async def _serve(fd: int, import_s: float) -> None:
    records = _Records()
    logger = logging.getLogger("daydream")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the Snakemake process shows them (and writes them to the job's log)
    logger.addHandler(records)
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    server = _Server(writer, records)
    _write(writer, ("ready", import_s, _rss_mb()))
    end = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, end.set)
    reading = asyncio.create_task(_requests(reader, server))
    await asyncio.wait([reading, asyncio.create_task(end.wait())], return_when=asyncio.FIRST_COMPLETED)
    reading.cancel()
    if server.tasks:  # calls in flight come back and are saved, for a while
        await asyncio.wait(list(server.tasks), timeout=GRACE_S)
    for task in list(server.tasks):
        task.cancel()
    writer.close()


async def _requests(reader: asyncio.StreamReader, server: _Server) -> None:
    while (frame := await _read(reader)) is not None:
        kind = frame[0]
        if kind == "call":
            server.start(*frame[1:])
        elif kind == "billed-ok":
            server.billed_answer(frame[1], None)
        elif kind == "billed-stop":
            server.billed_answer(frame[1], frame[2])


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: list[str] | None = None) -> None:
    fd = int((argv or sys.argv[1:])[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the Snakemake process's
    started = time.perf_counter()
    from daydream.providers.litellm_import import litellm_module

    litellm_module()  # the seconds of litellm's import, before the first call needs it
    asyncio.run(_serve(fd, time.perf_counter() - started))
    os._exit(0)  # every reply is saved and answered: no second of tearing down litellm's modules


if __name__ == "__main__":
    main()
