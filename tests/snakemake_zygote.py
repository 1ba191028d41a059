"""A pre-imported Snakemake for the tests (the "zygote"): a server that imports Snakemake, its
plugins and the daydream modules a run uses once, then forks one child per launch; the child
runs Snakemake's real command line (`snakemake.cli.main`) with the launcher's arguments,
working directory, environment and standard streams, and its exit status goes back to
the launcher (tests/snakemake_client.py), which exits with it. A launch so skips the imports
`python -m snakemake` pays for (measured at load 6: `--version` 1.6-1.8 CPU-s and 3-4 s real,
0.1 and 0.3 through the zygote; the tiny cohort's run 6.5-7.4 CPU-s, 2.9 through it).

Protocol, over a Unix stream socket: the client sends one request (a 4-byte length, then JSON:
argv, cwd, env, umask, executable) with its fds 0, 1 and 2 attached (SCM_RIGHTS); the zygote
answers with JSON lines: `{"fallback": why}` (the client then runs the real `python -m
snakemake` itself), or `{"pid": child}` and later `{"status": wait status}`. While its child
runs the client may send `{"signal": n}` lines (it forwards SIGINT, SIGTERM, SIGHUP, ...). A
client that goes away (killed) takes its child with it: the zygote SIGKILLs and reaps the
child as soon as it sees the connection close, and before it forks for any later request, so
a launch after a kill never meets the killed run's process (its writer lock, its files).

A launch runs through the zygote only when nothing the zygote fixed at import time differs
for it: the environment variables read while importing (recorded), the interpreter's own
(`PYTHON*`, locale, thread-count variables), the umask and the interpreter. Otherwise the
answer is a fallback. What a fork cannot give: the Snakemake process's pid is the child's,
not the launcher's (a test that reads the pid of the run it started launches the real entry
point, `REAL_SNAKEMAKE` in conftest.py); every child shares the zygote's string hash seed; and
a child ends as the interpreter does up to its atexit handlers, without tearing down modules
(an object left open at exit is not finalized).

Run as `python tests/snakemake_zygote.py SOCKET PARENT_PID`; `start` (the conftest fixture)
does that."""

from __future__ import annotations

import atexit
import ctypes
import importlib
import io
import json
import os
import pkgutil
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ENV_VAR = "DAYDREAM_TEST_SNAKEMAKE_ZYGOTE"
PLUGIN_PREFIXES = tuple(f"snakemake_{kind}_plugin_" for kind in ("executor", "logger", "storage", "report",
                                                                    "scheduler"))
# What `python -m snakemake` imports to start (the plugins are found on the path as Snakemake
# finds them), then what a run of the Snakefile imports: the scheduler, the DAG, daydream's
# modules (rules/common.smk), the reports' scipy and matplotlib, smart_open (Snakemake's URIs).
PRELOAD = ("snakemake.cli", "snakemake.api", "snakemake.workflow", "snakemake.dag", "snakemake.jobs",
           "snakemake.scheduling.job_scheduler", "snakemake.executors.local", "snakemake.report",
           "snakemake.report.html_reporter", "daydream.runtime", "daydream.targets", "daydream.cohorts",
           "daydream.documents", "daydream.reports", "daydream.site", "daydream.budget", "daydream.batches",
           "daydream.engine", "daydream.progress", "daydream.writer_lock", "daydream.stats",
           "daydream.checkpoint_inputs", "daydream.batch.commands", "daydream.batch.gate", "daydream.batch.rounds",
           "scipy.stats", "matplotlib.figure", "matplotlib.backends.backend_agg", "smart_open")
NEVER_PRELOADED = ("litellm",)  # imported by daydream on a real call, in the child
# Read by the interpreter or by C libraries when they load, where the recorder cannot see them.
INTERPRETER_ENV = ("PYTHON", "LANG", "LC_", "OMP_", "OPENBLAS_", "MKL_", "NUMEXPR_")
MAX_REQUEST = 64 << 20
PR_SET_PDEATHSIG = 1
HEADER = struct.Struct("!I")


# -- what the zygote fixes at import time ----------------------------------------------------------
class EnvironmentReads:
    """Records the environment variables read (by Python code) while it is active."""

    def __init__(self) -> None:
        self.read: dict[str, str | None] = {}
        self.listed = False

    def __enter__(self) -> EnvironmentReads:
        environ_type, reads = type(os.environ), self
        self._saved = environ_type.__getitem__, environ_type.__iter__

        def getitem(environ, key):
            try:
                value = reads._saved[0](environ, key)
            except KeyError:
                reads.read.setdefault(key, None)
                raise
            reads.read.setdefault(key, value)
            return value

        def iterate(environ):
            reads.listed = True
            return reads._saved[1](environ)

        environ_type.__getitem__, environ_type.__iter__ = getitem, iterate
        return self

    def __exit__(self, *exc) -> None:
        type(os.environ).__getitem__, type(os.environ).__iter__ = self._saved


def preload() -> EnvironmentReads:
    """Import what a Snakemake launch of this workflow imports; the environment reads it made."""
    with EnvironmentReads() as reads:
        for module in PRELOAD:
            importlib.import_module(module)
        for found in pkgutil.iter_modules():
            if found.ispkg and found.name.startswith(PLUGIN_PREFIXES):
                importlib.import_module(found.name)
    loaded = [name for name in NEVER_PRELOADED if name in sys.modules]
    threads = [thread.name for thread in threading.enumerate() if thread is not threading.current_thread()]
    if loaded or threads or reads.listed:
        raise RuntimeError(f"the zygote cannot fork safely: modules {loaded} imported, threads {threads} running, "
                           f"environment listed at import: {reads.listed}")
    return reads


@dataclass
class ImportState:
    """What a child inherits from the zygote's imports and a launch must share."""

    environment: dict[str, str | None]
    umask: int
    executable: str

    @classmethod
    def of_zygote(cls, reads: EnvironmentReads) -> ImportState:
        interpreter = {key: value for key, value in os.environ.items() if key.startswith(INTERPRETER_ENV)}
        umask = os.umask(0)
        os.umask(umask)
        return cls({**reads.read, **interpreter}, umask, sys.executable)

    def difference(self, request: dict) -> str | None:
        """Why a launch with this request cannot be forked from the zygote (None: it can)."""
        env = request["env"]
        keys = set(self.environment) | {key for key in env if key.startswith(INTERPRETER_ENV)}
        changed = sorted(key for key in keys if env.get(key) != self.environment.get(key))
        if changed:
            return f"environment variables read at import differ: {', '.join(changed)}"
        if request["umask"] != self.umask:
            return f"umask {request['umask']:o} is not the zygote's {self.umask:o}"
        if request["executable"] != self.executable:
            return f"interpreter {request['executable']} is not the zygote's {self.executable}"
        return None


# -- the server ------------------------------------------------------------------------------------
@dataclass
class Launch:
    connection: socket.socket
    pid: int
    pidfd: int
    argv: list[str]
    started: float = field(default_factory=time.monotonic)
    inbox: bytes = b""


@dataclass
class Zygote:
    listener: socket.socket
    state: ImportState
    log: io.TextIOBase
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    launches: dict[int, Launch] = field(default_factory=dict)  # by pid
    pid: int = field(default_factory=os.getpid)

    def serve_forever(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, self.accept)
        while True:
            self.dispatch(self.selector.select())

    def dispatch(self, events) -> None:
        for key, _ in events:
            current = self.selector.get_map().get(key.fd)
            if current is key:  # not finished by an earlier event of this round (its fd maybe reused)
                key.data(key.fileobj)

    def note(self, message: str) -> None:
        self.log.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        self.log.flush()

    # ---- requests
    def accept(self, _listener) -> None:
        connection, _ = self.listener.accept()
        self.settle()  # every client gone by now takes its child with it before the next fork
        try:
            request, fds = receive_request(connection)
        except (OSError, ValueError) as error:
            self.note(f"a request could not be read: {error!r}")
            connection.close()
            return
        why = self.state.difference(request)
        try:
            if why:
                self.note(f"fallback for {request['argv'][:3]}: {why}")
                connection.sendall(message(fallback=why))
            else:
                pid = os.fork()
                if pid == 0:
                    try:
                        self.become_child(request, fds, connection)
                    finally:
                        os._exit(70)  # never back into the zygote's loop
        except OSError as error:  # the client is gone or the fork failed
            self.note(f"launch failed: {error!r}")
            why = why or repr(error)
        finally:
            for fd in fds:
                os.close(fd)
        if why:
            connection.close()
            return
        launch = Launch(connection, pid, os.pidfd_open(pid), request["argv"])
        self.launches[pid] = launch
        self.selector.register(connection, selectors.EVENT_READ, lambda _: self.client_says(launch))
        self.selector.register(launch.pidfd, selectors.EVENT_READ, lambda _: self.child_ended(launch))
        try:
            connection.sendall(message(pid=pid))
        except OSError:
            self.client_gone(launch)

    def settle(self) -> None:
        self.dispatch([(key, mask) for key, mask in self.selector.select(timeout=0) if key.fileobj is not self.listener])

    # ---- running launches
    def client_says(self, launch: Launch) -> None:
        try:
            data = launch.connection.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.client_gone(launch)
            return
        launch.inbox += data
        *lines, launch.inbox = launch.inbox.split(b"\n")
        for line in lines:
            try:
                signal.pidfd_send_signal(launch.pidfd, int(json.loads(line)["signal"]))
            except ProcessLookupError:  # ended, not yet reaped: its status follows
                pass
            except (ValueError, KeyError, TypeError, OSError) as error:  # not a signal of ours: said, not served
                self.note(f"child {launch.pid}: cannot forward {line[:80]!r}: {error!r}")

    def client_gone(self, launch: Launch) -> None:
        """The client was killed: so is its child, at once (never left running)."""
        try:
            signal.pidfd_send_signal(launch.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(launch.pid, 0)
        self.note(f"child {launch.pid} killed with its client (status {status})")
        self.finish(launch)

    def child_ended(self, launch: Launch) -> None:
        _, status, usage = os.wait4(launch.pid, 0)
        try:
            launch.connection.sendall(message(status=status))
        except OSError:
            pass
        self.note(f"child {launch.pid} ended (status {status}) after {time.monotonic() - launch.started:.1f} s, "
                  f"{usage.ru_utime + usage.ru_stime:.1f} CPU-s: {' '.join(launch.argv)[:160]}")
        self.finish(launch)

    def finish(self, launch: Launch) -> None:
        self.selector.unregister(launch.connection)
        self.selector.unregister(launch.pidfd)
        launch.connection.close()
        os.close(launch.pidfd)
        del self.launches[launch.pid]

    # ---- the child
    def become_child(self, request: dict, fds: list[int], connection: socket.socket) -> None:
        """Turn the forked process into the launch's Snakemake process; never returns."""
        try:
            die_with_parent(self.pid)
            for launch in self.launches.values():  # other launches' ends: theirs to close
                launch.connection.close()
                os.close(launch.pidfd)
            for owned in (self.listener, self.selector, connection):
                owned.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            run_snakemake(request["argv"], request["cwd"])
        except BaseException:  # noqa: BLE001 - the child must end here, with the reason on its stderr
            traceback.print_exc()
            os._exit(70)


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """`signum` to this process when `parent` ends (Linux `prctl(PR_SET_PDEATHSIG)`): a child
    with its zygote, the zygote with its test process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it ended before that
        os._exit(70)


def run_snakemake(argv: list[str], cwd: str) -> None:
    """Run Snakemake's CLI as `python -m snakemake ARGV` would in `cwd`, and end the process as
    the interpreter ends (threads joined, atexit handlers run, streams flushed, exit status)."""
    import snakemake
    from snakemake.cli import main

    sys.argv = [str(Path(snakemake.__file__).with_name("__main__.py")), *argv]
    sys.path[0] = cwd  # `-m` puts the working directory first on the path
    reopen_standard_streams()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # its legacy global generator is not reseeded by a fork
    code, interrupted = 0, False
    try:
        main()
    except SystemExit as exit:
        code = exit_code(exit.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        interrupted = True
    except BaseException:  # noqa: BLE001 - the interpreter prints any other uncaught exception and exits 1
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # joins the non-daemon threads, as at interpreter exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # the interpreter's code for a failed flush at exit
    if interrupted:  # an uncaught KeyboardInterrupt ends the interpreter by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def reopen_standard_streams() -> None:
    """sys.stdin/stdout/stderr over the new fds 0-2, buffered as the interpreter buffers them at
    start-up (line-buffered on a terminal; stderr always)."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        old = getattr(sys, name)
        binary = open(fd, "rb" if fd == 0 else "wb", closefd=False)  # noqa: SIM115 - it lives on as sys.std*
        line_buffered = fd == 2 or (fd == 1 and os.isatty(fd))
        stream = io.TextIOWrapper(binary, encoding=old.encoding, errors=old.errors, line_buffering=line_buffered,
                                  write_through=old.write_through)  # -u, PYTHONUNBUFFERED
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


# -- messages --------------------------------------------------------------------------------------
def message(**fields) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def receive_request(connection: socket.socket) -> tuple[dict, list[int]]:
    """The request and the client's three standard fds."""
    connection.settimeout(30)
    data, fds, flags, _ = socket.recv_fds(connection, 1 << 16, 3)
    if flags & socket.MSG_CTRUNC or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"the request came with {len(fds)} fds, not 3")
    try:
        while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
            if len(data) >= HEADER.size and HEADER.unpack_from(data)[0] > MAX_REQUEST:
                raise ValueError("request too large")
            more = connection.recv(1 << 16)
            if not more:
                raise ValueError("the client closed the connection mid-request")
            data += more
        request = json.loads(data[HEADER.size:])
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    connection.settimeout(None)
    return request, fds


# -- starting and stopping one (the conftest fixture) ----------------------------------------------
@dataclass
class Running:
    """A zygote process started by `start`."""

    process: subprocess.Popen
    socket_path: Path
    umask: int  # the zygote's, and so of every launch it forks (a launch with another runs the real one)

    def stop(self) -> None:
        """SIGTERM the zygote (its children die with it) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket_path.unlink(missing_ok=True)


def start(folder: Path) -> Running:
    """A zygote serving on `folder`/snakemake.sock (listening at once; it preloads, then answers
    the launches waiting in its backlog), its log in `folder`/zygote.log."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "snakemake.sock"
    if len(os.fsencode(path)) > 107:
        raise ValueError(f"{path}: too long for a Unix socket's name (107 bytes); use a shorter --basetemp")
    path.unlink(missing_ok=True)
    with (folder / "zygote.log").open("a", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, __file__, str(path), str(os.getpid())], stdin=subprocess.DEVNULL,
                                   stdout=log,
                                   stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    deadline = time.monotonic() + 60
    while not path.exists():  # bound before the preload starts: a launch then waits for it, not a fallback
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Snakemake zygote did not start; see {folder / 'zygote.log'}")
        time.sleep(0.01)
    umask = os.umask(0)
    os.umask(umask)
    return Running(process, path, umask)


def serve(path: str, parent: int) -> None:
    die_with_parent(parent, signal.SIGTERM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    started = time.monotonic()
    reads = preload()
    log = sys.stdout
    zygote = Zygote(listener, ImportState.of_zygote(reads), log)
    zygote.note(f"zygote {os.getpid()} ready after {time.monotonic() - started:.1f} s; "
                f"import-time environment: {sorted(zygote.state.environment)}")
    zygote.serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
