"""Grading throughput of the backends on one batch, in one run, against `nbgrader autograde`.

    .venv/bin/python bench/backends.py [--lab toy|day2-fairness] [--submissions 12]

Grades the same submissions five ways -- `nbgrader autograde` (serial), the local
pool with 1 and with 2 workers, and the Slurm backend with 2 array tasks at once on a
one-node cluster this script starts (Debian's slurm-wlm + munge; needs root) -- and
prints wall times and ratios.  Then it checks the scaling model of the instructors'
guide (T = N x t / W) against what it measured: the 1-worker run gives t, the model
predicts the 2-worker and Slurm times, and the script prints prediction / measurement.
Finally it sizes a course with the measured t: nodes needed for S students x L labs
within a deadline.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
BIN = Path(sys.executable).parent
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"

from grading_throughput import build  # noqa: E402
from slurm_cluster import SlurmCluster, cannot_run  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def nodes_needed(students: int, labs: int, t_submission: float, workers_per_node: int, deadline_s: float) -> int:
    """The guide's model: the batch takes students x labs x t / (nodes x workers) seconds."""
    return max(1, math.ceil(students * labs * t_submission / (workers_per_node * deadline_s)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default="toy")
    parser.add_argument("--submissions", type=int, default=12)
    args = parser.parse_args()
    n, lab = args.submissions, args.lab
    grade = [str(BIN / "autograder"), "grade", lab, "--force", "--no-progress"]
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        ours, theirs = Path(tmp) / "ours", Path(tmp) / "nbgrader"
        build(ours, lab, n)
        shutil.copytree(ours, theirs)
        times["nbgrader autograde (serial)"] = timed([str(BIN / "nbgrader"), "autograde", lab, "--force"], theirs)
        times["local, 1 worker"] = timed(grade + ["--workers", "1"], ours)
        times["local, 2 workers"] = timed(grade + ["--workers", "2"], ours)
        why = cannot_run()
        if why is None:
            with SlurmCluster(Path(tmp) / "slurm") as cluster:
                # each task gets one of the node's 2 CPUs, so 2 run at once, as 2 local workers do
                times["slurm, 2 tasks at once"] = timed(
                    grade + ["--backend", "slurm", "--array-limit", "2", "--cpus-per-task", "1"], ours,
                    env={"SLURM_CONF": str(cluster.conf)})
        else:
            print(f"(no Slurm run: {why})")
    base = times["nbgrader autograde (serial)"]
    print(f"lab {lab}: {n} submissions, {os.cpu_count()} cores")
    for name, t in times.items():
        print(f"{name:30s} {t:7.2f} s  {t / n:5.2f} s/submission  nbgrader/this {base / t:5.2f}x")
    t1 = times["local, 1 worker"] / n
    print(f"\nscaling model T = N x t / W with t = {t1:.2f} s (the 1-worker run):")
    for name, workers in (("local, 2 workers", 2), ("slurm, 2 tasks at once", 2)):
        if name in times:
            predicted = n * t1 / workers
            print(f"  {name:28s} predicted {predicted:6.2f} s, measured {times[name]:6.2f} s, "
                  f"measured/predicted {times[name] / predicted:.2f}")
    print(f"\nsizing with t = {t1:.2f} s per submission and 16 workers per node (32 cores, 2 per notebook):")
    for students, labs, hours in ((200, 1, 1), (400, 5, 1), (2000, 5, 2)):
        print(f"  {students} students x {labs} labs within {hours} h: "
              f"{nodes_needed(students, labs, t1, 16, hours * 3600)} node(s)")


if __name__ == "__main__":
    main()
