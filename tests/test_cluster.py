"""Pretraining on a two-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head node and a worker
node, each with its own raylet, object store and worker processes), one Train worker per node, checkpoints on
storage both nodes share: a folder, and the local S3 server (benchmarks/local_s3.py). Mid-run the worker node is
lost whole (raylet, object store, agents and the Train worker on it, all SIGKILLed, as a preempted cloud machine
goes) and a fresh node joins in its place (as an autoscaler brings one): the run finishes its planned steps from
the last complete checkpoint, with nothing lost (RELIABILITY.md)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from test_pretrain import _free_ports, shards, tensorboard_losses, tiny_config  # noqa: F401 (fixture)

from benchmarks.local_s3 import LocalS3
from pretrain.checkpoint_commit import problems

STEPS, EVERY, KILL_AFTER = 6, 2, 3


@pytest.fixture(scope="module")
def s3():
    with LocalS3("spotmae-cluster") as server:  # first: the nodes started below inherit its variables
        yield server


@pytest.fixture(scope="module")
def cluster(s3):
    """A head node (the driver's, 1 CPU) and one worker node (1 CPU): a 2-worker run puts one on each."""
    import ray
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the nodes join with `ray start`, which would need the head's token
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "dashboard_port": _free_ports(1)[0], "temp_dir": temp_dir})
    nodes = Nodes(cluster.address)
    try:
        nodes.start()
        ray.init(address=cluster.address)
        nodes.wait_alive(2)
        yield nodes
    finally:
        ray.shutdown()
        nodes.stop()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


class Nodes:
    """Worker nodes joined to the head with `ray start --block`: every process of a node (raylet, object store,
    agents, the workers it starts) descends from that one process, so a node can be killed whole."""

    def __init__(self, address: str):
        self.address, self.running = address, []

    def start(self) -> subprocess.Popen:
        agent, grpc, env_agent, metrics = _free_ports(4)
        ray_bin = Path(sys.executable).parent / "ray"
        node = subprocess.Popen([str(ray_bin), "start", f"--address={self.address}", "--num-cpus=1", "--block",
                                 f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
                                 f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
                                 "--disable-usage-stats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.running.append(node)
        return node

    def kill(self, node: subprocess.Popen) -> int:
        """SIGKILL every process of the node at once, as a machine that is switched off; how many there were."""
        import psutil

        root = psutil.Process(node.pid)
        tree = root.children(recursive=True) + [root]
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        node.wait()
        self.running.remove(node)
        return len(tree)

    def wait_alive(self, count: int, timeout: float = 300) -> None:
        import ray

        deadline = time.monotonic() + timeout
        while sum(n["Alive"] for n in ray.nodes()) < count:
            assert time.monotonic() < deadline, f"fewer than {count} Ray nodes alive after {timeout} s"
            time.sleep(0.5)

    def stop(self) -> None:
        for node in list(self.running):
            self.kill(node)


class NodeKiller(threading.Thread):
    """Watches the ranks' status files. Once the rank on the worker node has finished step `at`, it kills that node
    whole and starts a fresh one, then waits for the restarted workers to report the step they resumed from."""

    def __init__(self, nodes: Nodes, status_dir: Path, at: int):
        import ray

        super().__init__(daemon=True)
        self.nodes, self.status_dir, self.at = nodes, status_dir, at
        self.head = ray.get_runtime_context().get_node_id()  # the driver's node
        self.killed = self.restart_step = self.error = None
        self.done = threading.Event()

    def statuses(self) -> list[dict]:
        found = []
        for path in self.status_dir.glob("rank_*.json"):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass  # being replaced
        return found

    def run(self):
        try:
            self.watch()
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def watch(self):
        while not self.done.is_set():
            current = self.statuses()
            if self.killed is None:
                away = [s for s in current if s["node"] != self.head and s["step"] >= self.at]
                if away:
                    self.kill(away[0])
            elif len(current) == 2 and all(s["pid"] != self.killed["pid"] for s in current) and \
                    len({s["start_step"] for s in current}) == 1:
                self.restart_step = current[0]["start_step"]
                return
            time.sleep(0.02)

    def kill(self, status: dict):
        (node,) = self.nodes.running
        self.killed = dict(status, processes=self.nodes.kill(node))
        for path in self.status_dir.glob("rank_*.json"):
            path.unlink()  # from here on, only the restarted workers write
        self.nodes.start()  # a fresh machine joins (what an autoscaler does)


def run_and_lose_a_node(cluster, shards, storage: str, status: Path):
    from pretrain.trainer import check_inputs, fit

    cfg = tiny_config(shards, storage, "twonodes", f"schedule.total_steps={STEPS}", f"checkpoint.every_steps={EVERY}",
                      "checkpoint.max_failures=1", "checkpoint.num_to_keep=4", f"debug.status_dir={status}")
    check_inputs(cfg)
    killer = NodeKiller(cluster, status, at=KILL_AFTER)
    killer.start()
    start = time.perf_counter()
    try:
        result = fit(cfg)
    finally:
        killer.done.set()
    assert killer.error is None and killer.killed is not None, killer.error
    lost = killer.killed["step"] - killer.restart_step
    print(f"\n{storage}: killed the node of rank {killer.killed['rank']} ({killer.killed['processes']} processes, its "
          f"Train worker pid {killer.killed['pid']} among them) after step "
          f"{killer.killed['step']}; restarted on a new node from step {killer.restart_step}: {lost} step(s) "
          f"recomputed; finished at step {result.metrics['step']} in {time.perf_counter() - start:.0f} s")
    assert killer.restart_step == EVERY * (killer.killed["step"] // EVERY)  # the last complete checkpoint
    assert 1 <= lost < EVERY + 1
    assert result.metrics["step"] == STEPS and result.metrics["start_step"] == killer.restart_step
    return result


@pytest.mark.slow
def test_losing_a_node_resumes_from_a_shared_folder(cluster, shards, tmp_path):
    run_and_lose_a_node(cluster, shards, str(tmp_path / "runs"), tmp_path / "status")
    run_dir = tmp_path / "runs" / "twonodes"
    saved = sorted(run_dir.glob("checkpoint_step_*"))
    assert [p.name for p in saved] == [f"checkpoint_step_{s:08d}" for s in range(EVERY, STEPS + 1, EVERY)]
    assert all(problems(p) == [] for p in saved)  # nothing half-written on the shared storage
    assert sorted(tensorboard_losses(run_dir)) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_losing_a_node_resumes_from_s3(cluster, s3, shards, tmp_path):
    storage = s3.url("runs")
    result = run_and_lose_a_node(cluster, shards, storage, tmp_path / "status")
    assert result.checkpoint.path.endswith(f"twonodes/checkpoint_step_{STEPS:08d}")
    run_dir = tmp_path / "run"
    s3.filesystem().get(f"{storage}/twonodes/", str(run_dir), recursive=True)
    saved = sorted(run_dir.glob("checkpoint_step_*"))
    assert [p.name for p in saved] == [f"checkpoint_step_{s:08d}" for s in range(EVERY, STEPS + 1, EVERY)]
    assert all(problems(p) == [] for p in saved)
    assert sorted(tensorboard_losses(run_dir)) == list(range(1, STEPS + 1))
