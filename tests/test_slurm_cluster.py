"""Start a real single-node Slurm cluster and run one job through it."""

from __future__ import annotations

import pytest

from tests.slurm_cluster import SlurmCluster, pid_alive, slurm_available


@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")  # one cluster at a time (--dist loadgroup)
def test_cluster_runs_a_job_and_stops_its_daemons(tmp_path):
    available, reason = slurm_available()
    if not available:
        pytest.skip(reason)

    with SlurmCluster(tmp_path / "cluster") as cluster:
        pids = dict(cluster.pids)
        assert set(pids) == {"munged", "slurmctld", "slurmd"}
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
