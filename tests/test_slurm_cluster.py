"""Start a real single-node Slurm cluster and run one job through it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.slurm_cluster import SlurmCluster, pid_alive, slurm_available, socket_room


@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")  # one cluster at a time (--dist loadgroup)
def test_cluster_runs_a_job_and_stops_its_daemons(tmp_path):
    available, reason = slurm_available()
    if not available:
        pytest.skip(reason)

    with SlurmCluster(tmp_path / "cluster") as cluster:
        pids, spool = dict(cluster.pids), cluster.slurmd_spool
        assert set(pids) == {"munged", "slurmctld", "slurmd"}
        assert socket_room(spool, cluster.node_name) >= 0, "slurmd's spool is short whatever tmp_path is"
        assert cluster.node_state() == "idle"

        job_id = cluster.submit("--wrap", "hostname > out.txt", f"--chdir={tmp_path}", "--job-name=hostname-test")
        state = cluster.wait_for_job(job_id, timeout=60)
        assert state in (None, "COMPLETED")
        running = cluster.run("squeue", "-h", "-o", "%i").stdout.split()
        assert str(job_id) not in running

    out = tmp_path / "out.txt"
    assert out.read_text().strip(), "job wrote no hostname"
    assert cluster.pids == {}
    left = {name: pid for name, pid in pids.items() if pid_alive(pid)}
    assert not left, f"daemons still running after exit: {left}"
    assert not spool.exists(), "the private spool dir is removed"


def test_slurmd_spool_leaves_room_for_the_job_step_sockets():
    # The deep pytest-xdist temp dir where a job stayed PENDING: slurmstepd could not make its
    # socket "<spool>/vm_1.4294967291" (109 bytes, more than a Unix socket path holds).
    deep = Path("/tmp/pytest-of-root/pytest-87/popen-gw1/test_cluster_runs_a_job_and_st0/cluster/spool/slurmd")
    assert socket_room(deep, "vm") < 0
    assert socket_room(Path("/tmp/slurmd-abcd1234"), "vm") > 40
