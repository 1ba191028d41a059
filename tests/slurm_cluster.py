"""A throwaway single-node Slurm cluster (munged + slurmctld + slurmd) for tests and benchmarks.

Usage::

    ok, why = slurm_available()
    with SlurmCluster(tmp_path) as cluster:
        job_id = cluster.submit("--wrap", "hostname > out.txt", "--chdir", str(tmp_path))
        state = cluster.wait_for_job(job_id)

Everything the cluster writes lives under ``work_dir`` (config, spool, logs, pid files), except
two private directories under /tmp, removed on exit:
- the munge runtime directory: ``munged`` runs as the ``munge`` user, which cannot enter pytest's
  0700 temp dirs (its log is copied to ``work_dir/log/munged.log``). It uses its own socket and
  key, so it never touches a system munged.
- slurmd's spool directory: each job step's slurmstepd listens on a Unix socket named
  ``<spool>/<node>_<job>.<step>``, and a socket path is at most 107 bytes. Under a deep pytest temp
  dir (``.../popen-gw1/test_cluster_runs_a_job_and_st0/cluster/spool/slurmd``) it was 109: the
  step died ("Unix socket path ... is too long"), slurmctld requeued the job and it stayed
  PENDING. A start refuses a spool path with too little room left (`socket_room`).
Slurm daemons listen on free ports picked at start. Needs root (daemons run as root/munge).

Clients must see ``SLURM_CONF``: pass ``cluster.env`` to subprocesses or call
``cluster.apply_env()``. Both also put ``work_dir/bin`` first on PATH; it holds wrappers for
srun/sbatch/squeue/... that pin SLURM_CONF, because snakemake's slurm-jobstep plugin strips all
SLURM_* variables before running srun inside a job.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

MUNGE_USER = "munge"
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
REQUIRED_BINARIES = (
    "munged",
    "munge",
    "unmunge",
    "slurmctld",
    "slurmd",
    "sinfo",
    "squeue",
    "sbatch",
    "scancel",
    "scontrol",
)
SLURM_DAEMONS = ("slurmctld", "slurmd")
TERMINAL_JOB_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
CGROUP_CONF = "CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n"
# Client commands get wrappers that pin SLURM_CONF: snakemake's slurm-jobstep plugin (0.6.1)
# drops every SLURM_* variable before calling srun inside the job, so srun would otherwise look
# for /etc/slurm/slurm.conf, then DNS SRV records, and die ("Could not establish a
# configuration source").
CLIENT_COMMANDS = ("srun", "sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct")
WRAPPER_MARK = "# slurm_cluster.py client wrapper"


class SlurmClusterError(RuntimeError):
    """The cluster could not be started, queried or stopped."""


# ---------------------------------------------------------------------------------------------
# small process / file helpers


def which(name: str) -> str | None:
    """Find a binary on PATH, falling back to the sbin dirs (often missing from PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which(name, path=path)


def real_binary(name: str) -> str | None:
    """Like ``which`` but skipping client wrappers written by a SlurmCluster."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), *SBIN_DIRS]
    for directory in filter(None, dirs):
        candidate = Path(directory) / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        with candidate.open("rb") as handle:
            if WRAPPER_MARK.encode() not in handle.read(256):
                return str(candidate)
    return None


def slurm_available() -> tuple[bool, str]:
    """Whether a cluster can be started here; the string says why not (for pytest.skip)."""
    missing = [name for name in REQUIRED_BINARIES if which(name) is None]
    if missing:
        return False, f"missing binaries {missing} (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return False, "starting slurmctld/slurmd/munged needs root"
    try:
        pwd.getpwnam(MUNGE_USER)
    except KeyError:
        return False, f"no {MUNGE_USER!r} user (is the munge package installed?)"
    return True, "slurm and munge binaries found"


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (daemons are not our children)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def find_processes(name: str) -> list[int]:
    """Pids of live (non-zombie) processes whose comm is ``name``."""
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [pid for pid in pids if process_name(pid) == name and pid_alive(pid)]


def process_cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- last {lines} lines of {path} ---\n{tail}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# The longest name slurmstepd gives a socket in slurmd's spool dir, "/<node>_<job>.<step>", with
# job and step ids up to 10 digits each; a Unix socket path holds at most 107 bytes.
SOCKET_PATH_MAX = 107


def socket_room(spool: Path, node_name: str) -> int:
    """Bytes left under the socket path limit for slurmstepd's longest socket in `spool`."""
    return SOCKET_PATH_MAX - len(f"{spool}/{node_name}_{'9' * 10}.{'9' * 10}".encode())


# Slurm's daemons and munge are machine-wide: a second cluster started beside a running one (two
# test workers) would fight over them, so starting one takes this lock until it stops.
ONE_AT_A_TIME = Path(tempfile.gettempdir()) / "daydream-test-slurm-cluster.lock"


def stop_pid(pid: int, name: str, timeout: float) -> None:
    """SIGTERM ``pid`` (if it still is ``name``), SIGKILL after ``timeout``, wait until gone."""
    if not pid_alive(pid):
        return
    if process_name(pid) != name:
        log.warning("pid %d is no longer %s (now %s); not signalling it", pid, name, process_name(pid))
        return
    log.info("stopping %s (pid %d)", name, pid)
    os.kill(pid, signal.SIGTERM)
    if wait_until(lambda: not pid_alive(pid), timeout):
        return
    log.warning("%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL", name, pid, timeout)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not wait_until(lambda: not pid_alive(pid), 10.0):
        raise SlurmClusterError(f"{name} (pid {pid}) survived SIGKILL")


def parse_node_line(text: str) -> dict[str, str]:
    """Parse the first line of ``slurmd -C`` (``NodeName=vm CPUs=2 ... RealMemory=24105``)."""
    first = text.strip().splitlines()[0]
    return dict(item.split("=", 1) for item in first.split() if "=" in item)


# ---------------------------------------------------------------------------------------------


class SlurmCluster:
    """Context manager running munged, slurmctld and slurmd for one work directory.

    Attributes after ``start()``: ``pids`` (``{"munged"|"slurmctld"|"slurmd": pid}``, only the
    daemons this object started), ``node_name``, ``cpus``, ``real_memory`` (MB), ``partition``,
    ``conf_path``, ``log_dir``, ``munge_socket``.
    """

    def __init__(
        self,
        work_dir: str | os.PathLike[str],
        *,
        partition: str = "debug",
        start_timeout: float = 60.0,
        stop_timeout: float = 20.0,
        def_mem_per_cpu: int = 500,
        munge_dir: str | os.PathLike[str] | None = None,
        extra_conf: str = "",
        allow_other_slurm_daemons: bool = False,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.conf_dir = self.work_dir / "etc"
        self.conf_path = self.conf_dir / "slurm.conf"
        self.log_dir = self.work_dir / "log"
        self.run_dir = self.work_dir / "run"
        self.bin_dir = self.work_dir / "bin"
        self.ctld_spool = self.work_dir / "spool" / "slurmctld"
        self.slurmd_spool: Path | None = None  # a short private dir under /tmp, made by start()
        self.partition = partition
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.def_mem_per_cpu = def_mem_per_cpu
        self.extra_conf = extra_conf
        self.allow_other_slurm_daemons = allow_other_slurm_daemons
        self._given_munge_dir = Path(munge_dir).resolve() if munge_dir else None
        self.munge_dir: Path | None = self._given_munge_dir
        self.pids: dict[str, int] = {}
        self.node_name = ""
        self.cpus = 0
        self.real_memory = 0
        self._node_fields: dict[str, str] = {}
        self._saved_env: dict[str, str | None] | None = None

    # -- environment -------------------------------------------------------------------------

    @property
    def extra_env(self) -> dict[str, str]:
        """What clients need: ``SLURM_CONF`` and ``PATH`` led by the client wrappers' dir."""
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != str(self.bin_dir)]
        return {"SLURM_CONF": str(self.conf_path), "PATH": os.pathsep.join([str(self.bin_dir), *path])}

    @property
    def env(self) -> dict[str, str]:
        """A full environment for subprocesses: ``os.environ`` plus ``extra_env``."""
        return {**os.environ, **self.extra_env}

    def apply_env(self) -> None:
        """Export ``extra_env`` into ``os.environ`` (undone by ``restore_env``/``stop``)."""
        if self._saved_env is None:
            self._saved_env = {key: os.environ.get(key) for key in self.extra_env}
        os.environ.update(self.extra_env)

    def restore_env(self) -> None:
        if self._saved_env is None:
            return
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = None

    @property
    def munge_socket(self) -> Path:
        if self.munge_dir is None:
            raise SlurmClusterError("munge directory not created yet (call start())")
        return self.munge_dir / "munge.socket.2"

    # -- client commands ---------------------------------------------------------------------

    def run(self, *args: str, check: bool = True, timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster, capturing text output."""
        proc = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
        if check and proc.returncode != 0:
            raise SlurmClusterError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def submit(self, *sbatch_args: str) -> int:
        """``sbatch --parsable`` with the given arguments; returns the job id."""
        out = self.run("sbatch", "--parsable", *sbatch_args).stdout.strip()
        return int(out.split(";")[0])

    def job_state(self, job_id: int) -> str | None:
        """The job's state as squeue reports it (any state), or None once it is purged."""
        proc = self.run("squeue", "-h", f"-j{job_id}", "-t", "all", "-o", "%T", check=False)
        state = proc.stdout.strip()
        return state or None

    def wait_for_job(self, job_id: int, timeout: float = 60.0) -> str | None:
        """Wait until the job reached a terminal state; return it (None if already purged)."""
        state: str | None = None

        def finished() -> bool:
            nonlocal state
            state = self.job_state(job_id)
            return state is None or state in TERMINAL_JOB_STATES

        if not wait_until(finished, timeout, interval=0.5):
            raise SlurmClusterError(f"job {job_id} not finished after {timeout:.0f} s (state {state})")
        return state

    def node_state(self) -> str:
        proc = self.run("sinfo", "-h", "-N", "-n", self.node_name, "-o", "%T", check=False)
        return proc.stdout.strip()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start munged, slurmctld and slurmd and wait until the node is idle. One cluster runs on
        a machine at a time: parallel test workers wait for the one before to stop (`ONE_AT_A_TIME`)."""
        ok, why = slurm_available()
        if not ok:
            raise SlurmClusterError(why)
        self._machine_lock = ONE_AT_A_TIME.open("a")
        fcntl.flock(self._machine_lock, fcntl.LOCK_EX)
        try:
            self._refuse_other_slurm_daemons()
        except BaseException:
            self._release_machine()
            raise
        try:
            self._make_dirs()
            self._start_munged()
            self._check_munge()
            self._write_configs()
            self._start_slurm_daemon("slurmctld", "slurmctld.pid", "slurmctld.log")
            self._start_slurm_daemon("slurmd", "slurmd.pid", "slurmd.log")
            self._wait_node_idle()
        except BaseException:
            try:
                self.stop()
            except SlurmClusterError as exc:
                log.error("cleanup after failed start also failed: %s", exc)
            raise
        log.info(
            "slurm cluster up in %s (node %s, %d CPUs, %d MB)",
            self.work_dir,
            self.node_name,
            self.cpus,
            self.real_memory,
        )
        return self

    def stop(self) -> None:
        """Cancel jobs, then stop exactly the daemons this object started (slurmd first)."""
        if "slurmctld" in self.pids:
            self._cancel_all_jobs()
        errors = []
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.get(name)
            if pid is None:
                continue
            try:
                stop_pid(pid, name, self.stop_timeout)
                del self.pids[name]
            except (OSError, SlurmClusterError) as exc:
                errors.append(f"{name} (pid {pid}): {exc}")
        self._cleanup_munge_dir()
        if self.slurmd_spool is not None and "slurmd" not in self.pids:
            shutil.rmtree(self.slurmd_spool, ignore_errors=True)
            self.slurmd_spool = None
        self.restore_env()
        self._release_machine()
        if errors:
            raise SlurmClusterError("could not stop: " + "; ".join(errors))

    def _release_machine(self) -> None:
        lock = getattr(self, "_machine_lock", None)
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
            self._machine_lock = None

    # -- start steps -------------------------------------------------------------------------

    def _refuse_other_slurm_daemons(self) -> None:
        others = {name: find_processes(name) for name in SLURM_DAEMONS}
        found = [f"{name} pid {pid} ({process_cmdline(pid)})" for name, pids in others.items() for pid in pids]
        if not found:
            return
        if self.allow_other_slurm_daemons:
            log.warning("other slurm daemons running (ignored): %s", "; ".join(found))
            return
        raise SlurmClusterError(
            "slurm daemons already running (left over from a crashed test?): "
            + "; ".join(found)
            + ". Stop them (kill <pid>) or pass allow_other_slurm_daemons=True."
        )

    def _make_dirs(self) -> None:
        for path in (self.conf_dir, self.log_dir, self.run_dir, self.ctld_spool):
            path.mkdir(parents=True, exist_ok=True)
        self.slurmd_spool = Path(tempfile.mkdtemp(prefix="slurmd-", dir="/tmp"))
        if self.munge_dir is None:
            self.munge_dir = Path(tempfile.mkdtemp(prefix="munge-", dir="/tmp"))
        self.munge_dir.mkdir(parents=True, exist_ok=True)
        munge_pw = pwd.getpwnam(MUNGE_USER)
        os.chown(self.munge_dir, munge_pw.pw_uid, munge_pw.pw_gid)
        self.munge_dir.chmod(0o755)
        self._ensure_munge_key(munge_pw)

    def _ensure_munge_key(self, munge_pw: pwd.struct_passwd) -> None:
        key = self.munge_dir / "munge.key"
        if key.exists():
            log.debug("reusing munge key %s", key)
            return
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(128))
        os.chown(key, munge_pw.pw_uid, munge_pw.pw_gid)
        log.debug("generated munge key %s", key)

    def _start_munged(self) -> None:
        pid_file = self.munge_dir / "munged.pid"
        old = self._read_pid(pid_file)
        if old and pid_alive(old) and process_name(old) == "munged":
            log.info("reusing munged pid %d already serving %s (not stopped on exit)", old, self.munge_socket)
            return
        log_file = self.munge_dir / "munged.log"
        cmd = [
            which("munged"),
            f"--socket={self.munge_socket}",
            f"--key-file={self.munge_dir / 'munge.key'}",
            f"--log-file={log_file}",
            f"--pid-file={pid_file}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        ]
        log.debug("starting %s", " ".join(cmd))
        proc = subprocess.run(
            cmd,
            user=MUNGE_USER,
            group=MUNGE_USER,
            extra_groups=[],
            cwd=self.munge_dir,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise SlurmClusterError(f"munged exited {proc.returncode}: {proc.stderr.strip()}\n" + log_tail(log_file))
        self.pids["munged"] = self._wait_pid_file("munged", pid_file, log_file)

    def _check_munge(self) -> None:
        sock = f"--socket={self.munge_socket}"
        cred = subprocess.run([which("munge"), sock, "-n"], capture_output=True, text=True, timeout=30, check=False)
        decoded = subprocess.run(
            [which("unmunge"), sock], input=cred.stdout, capture_output=True, text=True, timeout=30, check=False
        )
        if cred.returncode != 0 or decoded.returncode != 0:
            raise SlurmClusterError(
                f"munge -n | unmunge failed: {cred.stderr.strip()} {decoded.stderr.strip()}\n"
                + log_tail(self.munge_dir / "munged.log")
            )
        log.debug("munge round trip ok")

    def _detect_node(self) -> None:
        proc = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0 or "NodeName=" not in proc.stdout:
            raise SlurmClusterError(f"slurmd -C failed ({proc.returncode}): {proc.stderr}")
        fields = parse_node_line(proc.stdout)
        self.node_name = fields["NodeName"]
        self.cpus = int(fields["CPUs"])
        machine_mb = int(fields["RealMemory"])
        self.real_memory = max(1, min(machine_mb - 256, int(machine_mb * 0.95)))
        self._node_fields = fields

    def _node_line(self) -> str:
        keep = ("Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
        topology = " ".join(f"{k}={self._node_fields[k]}" for k in keep if k in self._node_fields)
        return (
            f"NodeName={self.node_name} NodeAddr=127.0.0.1 CPUs={self.cpus} {topology} "
            f"RealMemory={self.real_memory} State=UNKNOWN"
        )

    def _slurm_conf(self) -> str:
        host = socket.gethostname().split(".")[0]
        lines = [
            "ClusterName=daydream",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.ctld_spool}",
            f"SlurmdSpoolDir={self.slurmd_spool}",
            f"SlurmctldPidFile={self.run_dir / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.run_dir / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
            f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            f"DefMemPerCPU={self.def_mem_per_cpu}",
            "MinJobAge=600",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "InactiveLimit=0",
            "KillWait=5",
            "MailProg=/bin/true",
            self._node_line(),
            (f"PartitionName={self.partition} Nodes={self.node_name} Default=YES MaxTime=INFINITE State=UP"),
        ]
        return "\n".join(lines) + "\n" + self.extra_conf

    def _write_configs(self) -> None:
        self._detect_node()
        room = socket_room(self.slurmd_spool, self.node_name)
        if room < 0:
            raise SlurmClusterError(
                f"slurmd's spool dir {self.slurmd_spool} is too long by {-room} bytes for the Unix sockets "
                f"slurmstepd makes in it (at most {SOCKET_PATH_MAX} bytes): jobs would stay PENDING. "
                "Use a shorter temp dir (TMPDIR)."
            )
        self.conf_path.write_text(self._slurm_conf())
        (self.conf_dir / "cgroup.conf").write_text(CGROUP_CONF)
        self._write_client_wrappers()
        log.debug("wrote %s", self.conf_path)

    def _write_client_wrappers(self) -> None:
        """``bin_dir/<client>`` scripts exec'ing the real client with this SLURM_CONF."""
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        for name in CLIENT_COMMANDS:
            real = real_binary(name)
            if real is None:
                continue
            wrapper = self.bin_dir / name
            wrapper.write_text(
                f"#!/bin/sh\n{WRAPPER_MARK}\nexport SLURM_CONF='{self.conf_path}'\nexec '{real}' \"$@\"\n"
            )
            wrapper.chmod(0o755)

    def _start_slurm_daemon(self, name: str, pid_name: str, log_name: str) -> None:
        log_file = self.log_dir / log_name
        cmd = [which(name), "-f", str(self.conf_path)]
        log.debug("starting %s", " ".join(cmd))
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise SlurmClusterError(f"{name} exited {proc.returncode}: {proc.stderr.strip()}\n" + log_tail(log_file))
        self.pids[name] = self._wait_pid_file(name, self.run_dir / pid_name, log_file)

    def _wait_pid_file(self, name: str, pid_file: Path, log_file: Path) -> int:
        """Wait for a daemon's pid file to name a live process; return that pid."""

        def ready() -> bool:
            pid = self._read_pid(pid_file)
            return bool(pid) and pid_alive(pid)

        if not wait_until(ready, 15.0):
            raise SlurmClusterError(f"{name} did not come up (no live pid in {pid_file})\n" + log_tail(log_file))
        pid = self._read_pid(pid_file)
        log.info("%s running as pid %d", name, pid)
        return pid

    @staticmethod
    def _read_pid(pid_file: Path) -> int | None:
        try:
            text = pid_file.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _wait_node_idle(self) -> None:
        def idle() -> bool:
            self._check_daemons_alive()
            return self.node_state() == "idle"

        if not wait_until(idle, self.start_timeout, interval=0.5):
            reason = self.run("scontrol", "show", "node", self.node_name, check=False).stdout
            raise SlurmClusterError(
                f"node {self.node_name} not idle after {self.start_timeout:.0f} s "
                f"(state {self.node_state()!r})\n{reason}\n"
                + log_tail(self.log_dir / "slurmctld.log")
                + "\n"
                + log_tail(self.log_dir / "slurmd.log")
            )

    def _check_daemons_alive(self) -> None:
        for name, pid in self.pids.items():
            if not pid_alive(pid):
                log_file = self.munge_dir / "munged.log" if name == "munged" else self.log_dir / f"{name}.log"
                raise SlurmClusterError(f"{name} (pid {pid}) died\n" + log_tail(log_file))

    # -- stop steps --------------------------------------------------------------------------

    def _cancel_all_jobs(self) -> None:
        """Cancel leftover jobs so no slurmstepd outlives the cluster (best effort)."""
        try:
            jobs = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.split()
            if not jobs:
                return
            log.info("cancelling leftover jobs %s", " ".join(jobs))
            self.run("scancel", *jobs, check=False, timeout=10)
            wait_until(
                lambda: not self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.split(),
                15.0,
                interval=0.5,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not cancel leftover jobs: %s", exc)

    def _cleanup_munge_dir(self) -> None:
        """Keep munged's log in work_dir and remove the munge dir if we created it."""
        if self.munge_dir is None or "munged" in self.pids:
            return
        munge_log = self.munge_dir / "munged.log"
        if munge_log.exists() and self.log_dir.is_dir():
            shutil.copyfile(munge_log, self.log_dir / "munged.log")
        if self._given_munge_dir is None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None
