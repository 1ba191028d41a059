"""`python tests/snakemake_client.py ARGS` behaves as `python -m snakemake ARGS` for the tests
(conftest.py's `SNAKEMAKE`), in tens of milliseconds of start-up instead of seconds: it asks the
test session's pre-imported Snakemake (tests/snakemake_zygote.py, its socket named by
$DAYDREAM_TEST_SNAKEMAKE_ZYGOTE) to fork a Snakemake process running these arguments in this
working directory, with this environment and standard streams; it forwards the signals
it gets (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) to that process and ends as it
ended (its exit code, or killed by the same signal). Killed itself, it takes that process
with it. Without a zygote (no variable, no socket, or the zygote declines: see its docstring)
it becomes the real `python -m snakemake ARGS` (exec, same pid).

Standard library only, and nothing imported from the tests: it starts in a fresh interpreter
for every launch."""

import json
import os
import signal
import socket
import struct
import sys

ENV_VAR = "DAYDREAM_TEST_SNAKEMAKE_ZYGOTE"  # tests/snakemake_zygote.py: ENV_VAR
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class Launch:
    """One launch through the zygote; signals that come before the child exists wait here."""

    def __init__(self) -> None:
        self.connection: socket.socket | None = None
        self.child: int | None = None
        self.pending: list[int] = []
        self.inbox = b""

    def forward(self, signum, _frame) -> None:
        if self.child is None:
            self.pending.append(signum)
        else:
            self.connection.sendall(json.dumps({"signal": signum}).encode() + b"\n")

    def read(self) -> dict | None:
        """The zygote's next message; None when it closed the connection."""
        while b"\n" not in self.inbox:
            data = self.connection.recv(4096)
            if not data:
                return None
            self.inbox += data
        line, self.inbox = self.inbox.split(b"\n", 1)
        return json.loads(line)


def real_snakemake(pending: list[int] = ()) -> None:
    """Become `python -m snakemake` with this process's arguments (a signal already received
    ends this process as it would have ended that one, before it started)."""
    for signum in pending:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os.execv(sys.executable, [sys.executable, "-m", "snakemake", *sys.argv[1:]])


def request() -> bytes:
    umask = os.umask(0)
    os.umask(umask)
    body = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
                       "executable": sys.executable}).encode()
    return struct.pack("!I", len(body)) + body


def end_as(status: int) -> None:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code  # a signal whose default action is not to end the process
    os._exit(code)


def main() -> None:
    path = os.environ.get(ENV_VAR)
    if not path:
        real_snakemake()
    launch = Launch()
    for signum in FORWARDED:
        signal.signal(signum, launch.forward)
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)  # a closed standard fd cannot be passed on
        launch.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        launch.connection.connect(path)
        payload = request()
        sent = socket.send_fds(launch.connection, [payload], [0, 1, 2])
        launch.connection.sendall(payload[sent:])
        answer = launch.read()
    except OSError:
        answer = None
    if answer is None or "fallback" in answer:  # no zygote, or one declining this launch
        real_snakemake(launch.pending)
    launch.child = answer["pid"]
    for signum in launch.pending:
        launch.forward(signum, None)
    try:
        answer = launch.read()
    except OSError:
        answer = None
    if answer is None:
        print(f"snakemake_client: the Snakemake zygote ended while running pid {launch.child}", file=sys.stderr)
        os._exit(1)
    end_as(answer["status"])


if __name__ == "__main__":
    main()
