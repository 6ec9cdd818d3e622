"""Fleet fixtures: small generated traces of mixed formats, and real Dask clusters to run them on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvtrace.simulate.render import write_rendered
from pvtrace.simulate.run import simulate_to_parquet, simulate_trace
from pvtrace.simulate.scenario import load_preset

REPO = Path(__file__).resolve().parents[2]


def small(preset: str, ops: int):
    return load_preset(preset).replace(vm={"ops": ops})


@pytest.fixture(scope="session")
def trace_dir(tmp_path_factory) -> Path:
    """A folder of traces: two Parquet files, one perf script text, one corrupt file."""
    d = tmp_path_factory.mktemp("fleet-traces")
    simulate_to_parquet(small("seed-table", 400), d / "seed.parquet", seed=3)
    simulate_to_parquet(small("lhp-demo", 300), d / "lhp.parquet", seed=4)
    trace, _ = simulate_trace(small("overcommit-2x", 200), seed=5)
    write_rendered(trace, "perf", "host", d / "host.perf")
    (d / "corrupt.txt").write_text("this is not a trace\n")
    return d


@pytest.fixture(scope="session")
def capture(tmp_path_factory) -> tuple[Path, list[Path]]:
    """One capture in several files (host ftrace plus a guest file per VM) and a manifest naming
    them as one trace with labels."""
    d = tmp_path_factory.mktemp("fleet-capture")
    trace, _ = simulate_trace(small("lhp-demo", 300), seed=6)
    files = write_rendered(trace, "ftrace", "merged", d / "cap.txt")
    texts = [f for f in files if f.suffix == ".txt"]
    lines = ["path,trace,host,kernel"] + [f"{f.name},cap1,hostA,6.8" for f in texts]
    (d / "manifest.csv").write_text("\n".join(lines) + "\n")
    return d / "manifest.csv", texts


@pytest.fixture(scope="session")
def slow_traces(tmp_path_factory) -> Path:
    """Eight copies of a trace big enough (~0.5 s to analyze) to kill a worker in mid-task."""
    d = tmp_path_factory.mktemp("fleet-slow")
    simulate_to_parquet(load_preset("seed-table"), d / "t0.parquet", seed=1)
    for i in range(1, 8):
        shutil.copy(d / "t0.parquet", d / f"t{i}.parquet")
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scheduler_address(request):
    """`dask scheduler` and two `dask worker` processes (no nanny: killing one kills the worker);
    yields (address, worker processes). Parametrized indirectly: the scheduler's allowed-failures."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if getattr(request, "param", None) is not None:
        env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(request.param)
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = [
        subprocess.Popen(
            [*dask, "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker", address]
    workers = [
        subprocess.Popen(
            [*worker_cmd, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    procs += workers
    try:
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout="5s") as c:
                    c.wait_for_workers(2, timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield address, workers
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
