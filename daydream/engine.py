"""The call engine: a real run's model calls at an event loop's pace, fed by the run's DAG.

With one Snakemake job per document, calls in flight were bounded by the rate at which
Snakemake starts jobs (about 45 a second here: 90 calls in flight at 2 s a reply, whatever the
cap). In a real run on the local executor with jobs in threads (the profile's
`force-use-threads`), `start` (the `onstart:` hook) gives the run one `Engine`: an asyncio event
loop in a daemon thread of the Snakemake process, owned by the Run (`Run.engine`).

Which documents: the `gen_document` jobs of this run's DAG (Snakemake's own list of what it will
run, read in `onstart:`), whose template is an LLM template on a direct route: not under
`offline=true`, not in batch mode (`batch.policy.batched`), not a cluster run
(`reply_batch_size` > 0). Nothing else is ever called ahead: the user pays only for what the
run was asked to make.

When: a document's call starts as soon as its prompt can be built, by the same function as its
job (`documents.document_prompt`): a root document at once; a child of a document the engine
answered as soon as that answer is saved, from the parsed text the parent's job will write
(`documents.parsed_ahead`, the job's own steps without their side effects: the same bytes its
file will hold); any other child when its parent's job has written the parent's files (the
Run's `document_made` event; the engine is one of the Run's observers), or at once when the
parent is not remade in this run. Its job asks the ledger as
always (`ledger.answer`), which hands it to `Engine.answer`: the answer of the engine's call
for that exact prompt (waited for while in flight), or a call started now. One document has one
call at a time: a job whose prompt differs from the one the engine sent (a file edited
meanwhile) waits for the engine's call to end, then finds its reply in the ledger (restored) as
any changed prompt does; no prompt is ever sent twice.

How: each call takes the ledger's own steps (`ledger.found`, `before_call`, `call_request`,
`record_failure`, `record_kept`, `called`): the saved reply or the paid record first, the budget
guard's admission (`Run.admit_call`: the same reservation as a job's call), the call itself,
made by the run's call process (`daydream.call_process`: litellm's CPU on a core of its own,
under a slot of the run's caps held here for the whole call, `Run.limits`), which saves the
reply before it answers; here it is then counted and recorded. Should the call process die,
its calls in flight fail (`CallProcessDied`) and the engine makes the rest on its own loop
(`calls.acall_model`, `ledger.call_arguments`, `call_failed`, `keep_paid`), as it did before.
File work and admissions run in two small thread pools (an admission may wait for calls in
flight to end, a save never waits), so the loop never blocks.
A document's calls wait at a gate of its model's cap (`_gate`), so budget reservations and
"calls in flight" count only calls that are about to be sent. A failed call reaches its job as
the same exception. Its log lines (call, retries, failure) are kept per document and written
into its job's log when the job takes the answer (`job_log.replay`).

Stopping: Ctrl-C (`watch_interrupts`) and the end of the run (`stop`) start no new call; calls in
flight finish and are saved, then the call process ends. A kill of the Snakemake process ends
its call process too: it starts no new call, saves the replies of the calls in flight that
come back within `call_process.GRACE_S`, and exits; the next run reuses what was saved (and
writes its missing lines of llm_calls.jsonl, `ledger.recover_record`)."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import logging
import signal
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from daydream import call_process, calls, documents, job_log, ledger, stages
from daydream.batch import policy as batch_policy
from daydream.call_process import CallProcess
from daydream.membership import Member, UnknownGenerationError
from daydream.prompts import Prompt
from daydream.runtime import Runtime

log = logging.getLogger(__name__)

_GEN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("daydream_engine_gen_id", default=None)
ADMISSION_THREADS = 4  # admissions (the saved-reply lookup, the budget guard, which may wait)
FILE_THREADS = 8  # prompts built and replies saved (fsync) off the loop
LOOP_ANSWER_S = 5.0  # how long `stop` waits for the loop to run a step before it goes on without it


class EngineStopped(RuntimeError):
    """Not called: the run is stopping (Ctrl-C); the next run makes this document."""


@dataclass
class _Call:
    sha256: str
    future: concurrent.futures.Future


class _Capture(logging.Handler):
    """Keeps the daydream log records emitted for a document inside the engine (its call,
    retries, failure), for its job's log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: dict[str, list[logging.LogRecord]] = defaultdict(list)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        gen_id = _GEN_ID.get()
        if gen_id is not None:
            with self._guard:
                self.records[gen_id].append(record)

    def take(self, gen_id: str) -> list[logging.LogRecord]:
        with self._guard:
            return self.records.pop(gen_id, [])


class Engine:
    """The run's call engine for the documents `members` (see the module's docstring)."""

    def __init__(self, rt: Runtime, documents_of_run: Callable[[], list[tuple[str, str]]]):
        self.rt = rt
        self._documents_of_run = documents_of_run
        self._signature: tuple | None = None  # the membership the run's documents were read with
        self._served: dict[str, Member] = {}
        self._remade: set[str] = set()  # every document this run makes (its files may change)
        self._children: dict[str, list[Member]] = defaultdict(list)
        self._calls: dict[str, _Call] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._stopped = False
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._admissions = concurrent.futures.ThreadPoolExecutor(ADMISSION_THREADS, "daydream-engine-admit")
        self._files = concurrent.futures.ThreadPoolExecutor(FILE_THREADS, "daydream-engine-files")
        self._capture = _Capture()
        logging.getLogger("daydream").addHandler(self._capture)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=_run, args=(self._loop,), name="daydream-engine", daemon=True)
        self._thread.start()
        self._process: CallProcess | None = None  # started with the first document to call

    def refresh(self, force: bool = False) -> None:
        """Read the run's documents again when the membership changed since the last read (the
        cohort checkpoint ran: Snakemake added their jobs to its DAG), or with `force` (a job of
        a document the last read did not hold: a batch round's checkpoint added it), and start
        the calls that can start."""
        with self._lock:
            signature = self.rt.membership.signature()
            if (signature == self._signature and not force) or self._stopping.is_set():
                return
            self._signature = signature
            try:
                documents_of_run = self._documents_of_run()
            except Exception as error:  # noqa: BLE001 - only speed is lost: each job then makes its own call
                log.warning("the call engine could not read the run's documents from Snakemake's DAG (%s: %s); "
                            "each document job makes its own call", type(error).__name__, error)
                return
            new = [m for m in served(self.rt, documents_of_run) if m.gen_id not in self._served]
            if new and self._process is None:  # it imports litellm (seconds) while the run starts
                self._process = CallProcess.start(self._loop, self._files)
            self._remade.update(gen_id for _, gen_id in documents_of_run)
            for member in new:
                self._served[member.gen_id] = member
                if member.parent_gen_id:
                    self._children[member.parent_gen_id].append(member)
            for member in new:
                self._start_if_ready(member)

    def _start_if_ready(self, member: Member) -> None:
        """Start a document's call when its prompt can be built now: a root document, or one whose
        parent is done and not remade in this run (else its parent's `document_made` starts it)."""
        parent = member.parent_gen_id
        if not parent:
            self._start(member)
        elif parent not in self._remade and self._parent_done(member):
            self._children[parent].remove(member)
            self._start(member)

    # -- what the ledger asks ------------------------------------------------------------------
    def serves(self, member: Member) -> bool:
        """Whether this engine makes the document's call (a document it has a call for, or one
        of the run's documents while it is not stopping)."""
        if member.gen_id not in self._remade:
            self.refresh(force=True)
        if member.gen_id not in self._served:
            return False
        with self._lock:
            return not self._stopping.is_set() or member.gen_id in self._calls

    def answer(self, member: Member, prompt: Prompt) -> ledger.Answer:
        """The answer to the document's prompt (its job's thread waits here): the engine's call
        for it, in flight or done, or one started now. Raises what the call raised."""
        while True:
            with self._lock:
                current = self._calls.get(member.gen_id)
                if current is None or current.sha256 == prompt.sha256:
                    self._submit(member, prompt)
                    taken = self._calls[member.gen_id]
                    break
            # Another prompt of this document is in flight: it ends first (a reply is never paid
            # twice for one document); then the ledger finds what it saved.
            concurrent.futures.wait([current.future])
            self._forget(member, current)
        try:
            return taken.future.result()
        finally:
            job_log.replay(self._capture.take(member.gen_id))
            self._forget(member, taken)  # its reply is in the ledger now: memory stays flat

    def _forget(self, member: Member, call: _Call) -> None:
        with self._lock:
            if self._calls.get(member.gen_id) is call:
                del self._calls[member.gen_id]

    # -- the run's events (an observer of the Run) -------------------------------------------------
    def document_started(self, stage: str) -> None:
        """A document job starts (in its thread): the DAG holds the documents of a membership
        built during this run by then."""
        self.refresh()

    def document_made(self, stage: str, gen_id: str, source: str) -> None:
        """A document's job wrote its files: its children's prompts can be built now."""
        with self._lock:
            children = self._children.pop(gen_id, ())
        for child in children:
            self._start(child)

    # -- starting calls ------------------------------------------------------------------------------
    def _parent_done(self, member: Member) -> bool:
        parent_stage = stages.get(member.stage).parent
        return self.rt.paths.parsed_path(parent_stage, member.parent_gen_id).exists()

    def _start(self, member: Member) -> None:
        if not self._stopping.is_set():
            asyncio.run_coroutine_threadsafe(self._prepare(member), self._loop)

    async def _prepare(self, member: Member) -> None:
        """Build the document's prompt (as its job does) and start its call. A prompt that cannot
        be built is left to the job, which fails with the reason."""
        try:
            prompt = await self._in(self._files, documents.document_prompt, self.rt, member)
        except Exception as error:  # noqa: BLE001 - the job builds it again and fails with the reason
            log.debug("engine: %s left to its job: %s", member.gen_id, error)
            return
        with self._lock:
            if member.gen_id not in self._calls and not self._stopping.is_set():
                self._submit(member, prompt)

    def _submit(self, member: Member, prompt: Prompt) -> concurrent.futures.Future:
        """Under the lock: the document's call for this prompt, started when there is none."""
        current = self._calls.get(member.gen_id)
        if current is not None:
            return current.future
        if self._stopping.is_set():
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(EngineStopped(f"{member.gen_id}: not called: the run is stopping; the next run "
                                               "makes it"))
        else:
            future = asyncio.run_coroutine_threadsafe(self._answer(member, prompt), self._loop)
        self._calls[member.gen_id] = _Call(prompt.sha256, future)
        return future

    # -- one call ------------------------------------------------------------------------------------
    async def _answer(self, member: Member, prompt: Prompt) -> ledger.Answer:
        """The ledger's steps for one prompt, its call on the loop (see the module's docstring)."""
        _GEN_ID.set(member.gen_id)  # this task's own context: its log records are the document's
        rt = self.rt
        earlier = await self._in(self._admissions, ledger.found, rt, member, prompt)
        if earlier is not None:
            self._children_ahead(member, earlier)
            return earlier
        gate = self._gate(member)
        await gate.acquire()
        passed = _once(gate.release)  # at the end of the block, or once the reply is back
        try:
            if self._stopping.is_set():
                raise EngineStopped(f"{member.gen_id}: not called: the run is stopping; the next run makes it")
            ticket = await self._in(self._admissions, ledger.before_call, rt, member, prompt)
            process = self._process if self._process is not None and not self._process.dead else None
            try:
                if process is not None:
                    came_back = await self._elsewhere(process, ticket, member, prompt, passed)
                else:  # no call process (it died): the call is made on this loop, as the thread would
                    done = await calls.acall_model(**ledger.call_arguments(rt, member, prompt, ticket))
            except calls.LLMCallError as error:  # a failed reply it paid for is saved already (either way)
                if process is not None:
                    await self._in(self._files, self._ended, ticket, ledger.record_failure, rt, member, error)
                else:
                    await self._in(self._files, self._ended, ticket, ledger.call_failed, rt, member, prompt, error)
                raise
            except BaseException:
                rt.run.end_call(ticket)
                raise
        finally:
            passed()
        if process is not None:
            answer = await self._in(self._files, self._recorded, ticket, member, prompt, *came_back)
        else:
            answer = await self._in(self._files, self._kept, ticket, member, prompt, done)
        self._children_ahead(member, answer)
        return answer

    async def _elsewhere(self, process: CallProcess, ticket, member: Member, prompt: Prompt,
                         passed: Callable[[], None]) -> tuple:
        """The call made by the call process (`daydream.call_process`), which saves its reply
        before it answers; here under a slot of the run's caps from before it is sent until its
        reply is back (never more calls in flight than the caps, whoever makes them), given
        back with the model's gate (`passed`) while the reply is saved. (completion, call id,
        where it was saved, why it was not)."""
        rt = self.rt
        row = rt.experiment.models[member.llm_model_id]
        slot = rt.run.limits.aslot(calls.concurrency_key(row, rt.settings), row.max_concurrency)
        await slot.__aenter__()
        back = _once(lambda: (slot.release(), passed()))
        try:
            return await process.call(ledger.call_request(rt, member, prompt), member, prompt, rt.paths,
                                      lambda attempt: ledger.record_attempt(rt, member, ticket, attempt), back)
        finally:
            back()

    def _recorded(self, ticket, member: Member, prompt: Prompt, done: calls.Completion, call_id: str, saved,
                  not_kept: str) -> ledger.Answer:
        try:
            self.rt.run.paid(ticket, done)
            ledger.record_kept(self.rt, member, done, call_id, saved,
                               ledger.ReplyNotKept(not_kept) if not_kept else None)
        finally:
            self.rt.run.end_call(ticket)
        return ledger.called(self.rt, member, prompt, done)

    def _children_ahead(self, member: Member, answer: ledger.Answer) -> None:
        """Start the children's calls from this answer, before the document's job has written
        its files: their prompts are built from the parsed text that job will write
        (`documents.parsed_ahead`), byte for byte the text their own jobs will read."""
        with self._lock:
            children = self._children.pop(member.gen_id, [])
        if children:
            self._loop.run_in_executor(self._files, self._start_children, member, answer, children)

    def _start_children(self, member: Member, answer: ledger.Answer, children: list[Member]) -> None:
        try:
            parsed = documents.parsed_ahead(self.rt, member, answer)
            prompts = [(child, documents.document_prompt(self.rt, child, parsed)) for child in children] \
                if parsed is not None else []
        except Exception as error:  # noqa: BLE001 - the jobs build them again and fail with the reason
            log.debug("engine: the children of %s are left to their jobs: %s", member.gen_id, error)
            prompts = []
        if not prompts:  # it will not parse (its job says why), or a prompt could not be built
            with self._lock:
                self._children[member.gen_id].extend(children)  # the parent's document_made starts them
            return
        with self._lock:
            for child, prompt in prompts:
                if child.gen_id not in self._calls and not self._stopping.is_set():
                    self._submit(child, prompt)

    def _ended(self, ticket, step, *args) -> None:
        try:
            step(*args)
        finally:
            self.rt.run.end_call(ticket)

    def _kept(self, ticket, member: Member, prompt: Prompt, done: calls.Completion) -> ledger.Answer:
        self._ended(ticket, ledger.keep_paid, self.rt, member, prompt, ticket, done)
        return ledger.called(self.rt, member, prompt, done)

    def _gate(self, member: Member) -> asyncio.Semaphore:
        """Calls of one concurrency key pass at most its cap at a time (`ConcurrencyLimits`)."""
        row = self.rt.experiment.models[member.llm_model_id]
        key = calls.concurrency_key(row, self.rt.settings)
        if key not in self._gates:
            cap = self.rt.run.limits.global_cap
            self._gates[key] = asyncio.Semaphore(min(row.max_concurrency or cap, cap))
        return self._gates[key]

    async def _in(self, pool: concurrent.futures.Executor, function, *args):
        """`function(*args)` in `pool`, in this task's context (its log records stay the document's)."""
        context = contextvars.copy_context()
        return await self._loop.run_in_executor(pool, context.run, function, *args)

    # -- stopping ------------------------------------------------------------------------------------
    def stop(self, wait: bool = True) -> None:
        """Start no new call; with `wait`, let the calls in flight finish and be saved, then end
        the loop and its threads. Without `wait`, or with a loop too busy to answer, the call
        process is still only told that no call follows: it saves the replies of its calls in
        flight (for `call_process.GRACE_S`) and exits; it is killed only after that grace and
        only with `wait` (a reply being saved here is saved either way)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping.set()
            pending = [c.future for c in self._calls.values()]
        if wait:
            concurrent.futures.wait(pending)
        process = self._process
        if process is not None and not self._closed_on_loop(process):
            process.end_requests()  # the loop is stuck or gone: never a kill that loses a paid reply
        if process is not None and wait:
            process.wait(timeout=call_process.GRACE_S + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._admissions.shutdown(wait=False, cancel_futures=True)
        self._files.shutdown(wait=True)  # a reply being saved is never cut short
        logging.getLogger("daydream").removeHandler(self._capture)

    def _closed_on_loop(self, process: CallProcess) -> bool:
        """Whether the loop ran `process.close()` (the call process then ends once its calls in
        flight are saved, GRACE_S at most) within LOOP_ANSWER_S."""
        if not self._thread.is_alive():
            return False
        try:
            asyncio.run_coroutine_threadsafe(process.close(), self._loop).result(timeout=LOOP_ANSWER_S)
        except (concurrent.futures.TimeoutError, RuntimeError):  # held too long, or stopped meanwhile
            return False
        return True

    def interrupted(self) -> None:
        """Ctrl-C: no new call starts (those in flight finish and are saved)."""
        self._stopping.set()


def _once(release: Callable[[], object]) -> Callable[[], None]:
    """`release`, run by the first call only."""
    pending = [release]

    def run() -> None:
        if pending:
            pending.pop()()
    return run


def _run(loop: asyncio.AbstractEventLoop) -> None:
    """The engine's thread: its loop until `stop` stops it, then whatever else is still on it
    (litellm's logging worker; a step `stop` did not wait for) is cancelled and let end, so
    nothing is left pending, however long the loop was held before."""
    loop.run_forever()
    loop.run_until_complete(_cancel_the_rest())


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def served(rt: Runtime, documents_of_run: Iterable[tuple[str, str]]) -> list[Member]:
    """The documents of the run whose call the engine makes: an LLM template on a direct route."""
    members = []
    for stage, gen_id in documents_of_run:
        try:
            member = rt.membership.member(gen_id)
        except UnknownGenerationError:
            continue  # not a document of the active cohorts: its job says so
        if member.stage == stage and rt.template(member).generator == "llm" and not batch_policy.batched(rt, member):
            members.append(member)
    return members


def start(rt: Runtime, documents_of_run: Callable[[], list[tuple[str, str]]], *,
          jobs_in_threads: bool) -> Engine | None:
    """`onstart:` of a real run: the run's engine (`Run.engine`), given how to read the documents
    of the run (Snakemake's DAG, read now and again after a cohort checkpoint); None where it
    cannot apply: jobs in other processes (another executor, jobs not in threads), a cluster
    run (`reply_batch_size`), `offline=true`, a run that only plans."""
    run = rt.run
    if not jobs_in_threads or rt.reply_batch_size or rt.settings.offline or run.planning_only:
        return None
    engine = Engine(rt, documents_of_run)
    run.engine = engine
    run.observe(engine)
    atexit.register(engine.stop)  # Ctrl-C: calls in flight are saved before the process ends
    watch_interrupts(engine)
    engine.refresh()
    return engine


def finish(rt: Runtime) -> None:
    """`onsuccess:` / `onerror:`: the engine stops once its calls in flight are saved."""
    engine, rt.run.engine = rt.run.engine, None
    if isinstance(engine, Engine):
        engine.stop()


def watch_interrupts(engine: Engine) -> None:
    """In the main thread: a Ctrl-C also stops the engine starting calls, then goes on to the
    handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum, frame):
        engine.interrupted()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
