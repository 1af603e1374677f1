"""Latency of the student's path: hand in a lab, get its score and feedback.

    .venv/bin/python bench/submission_latency.py [--lab day2-fairness] [--submissions 20] [--workers 2]
                                                 [--via upload|exchange]

Starts ``autograder serve`` (which starts the grading loop) on a fresh course
directory and measures, per submission, the seconds from handing it in to its
score and feedback being available (the attempt's ``finished`` time minus its
hand-in time, as the service records them; the client's own clock is printed
beside it):

1. **alone**: one submission at a time on an idle service, three times: the
   service's overhead on top of the lab's own execution time;
2. **batch**: ``--submissions`` students hand in at once (HTTP uploads, or
   ``nbgrader submit`` into the exchange with ``--via exchange``): median and
   max latency, against the lab's execution time and the time the batch would
   take on ``--workers`` workers with no overhead at all (N x t / W).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
BIN = Path(sys.executable).parent
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"

import nbformat  # noqa: E402

from autograder.attempts import AttemptStore  # noqa: E402
from autograder.course import COURSE_ID, Course  # noqa: E402
from autograder.demo import answer_ids, student_version  # noqa: E402
from submission_service import Service, attempt_id  # noqa: E402


def solved_notebook(course: Course, lab_name: str) -> tuple[str, bytes]:
    lab = course.lab(lab_name)
    name = lab.notebooks[0]
    source = nbformat.read(lab.source_dir / name, as_version=4)
    release = nbformat.read(course.release / lab.name / name, as_version=4)
    return name, nbformat.writes(student_version(release, source, solved=set(answer_ids(source)))).encode()


def exchange_submit(exchange: Path, home: Path, student: str, lab: str, name: str, data: bytes) -> None:
    """What a student does on a hub: nbgrader fetch_assignment, edit, nbgrader submit."""
    home.mkdir(parents=True, exist_ok=True)
    common = ["--course", COURSE_ID, f"--Exchange.root={exchange}"]
    env = {**os.environ, "HOME": str(home)}
    if not (home / lab).is_dir():
        subprocess.run(["nbgrader", "fetch_assignment", lab, *common], cwd=home, env=env, check=True,
                       capture_output=True)
    (home / lab / name).write_bytes(data)
    subprocess.run(["nbgrader", "submit", lab, "--student", student, *common], cwd=home, env=env, check=True,
                   capture_output=True)


def summary(label: str, attempts, client_seconds: list[float] | None = None) -> dict:
    latencies = [a.latency for a in attempts]
    runs = [a.run_seconds for a in attempts if a.run_seconds]
    figures = {"n": len(attempts), "median": statistics.median(latencies), "max": max(latencies),
               "min": min(latencies), "run": statistics.median(runs) if runs else float("nan")}
    line = (f"{label:<34} n={figures['n']:>2}  latency median {figures['median']:6.1f} s  max {figures['max']:6.1f} s"
            f"  min {figures['min']:6.1f} s  | the notebook's own run {figures['run']:5.1f} s")
    if client_seconds:
        line += f"  | client clock median {statistics.median(client_seconds):6.1f} s"
    print(line, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default="day2-fairness")
    parser.add_argument("--submissions", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--alone", type=int, default=3, help="submissions handed in one at a time first")
    parser.add_argument("--via", choices=["upload", "exchange"], default="upload")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPU cores; lab {args.lab}; {args.workers} grading workers; batch via {args.via}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        tmp = Path(tmp)
        exchange = tmp / "exchange"
        env = {"AUTOGRADER_EXCHANGE": str(exchange)}
        os.environ.update(env)
        students = [f"s{i:02d}" for i in range(args.submissions)]
        service = Service(tmp / "course", students=students + ["solo"], instructors=(), env=env,
                          args=["--workers", str(args.workers), "--rate", "100"])
        course = Course(tmp / "course")
        subprocess.run(["autograder", "release", args.lab, "--course-dir", str(course.root), "--exchange"],
                       check=True, capture_output=True, env={**os.environ, **env})
        name, data = solved_notebook(course, args.lab)
        store = AttemptStore(course)
        service.start()
        try:
            # 1. alone: the overhead on top of the lab's own run
            solo, solo_client = [], []
            client = service.client("solo")
            for i in range(args.alone):
                # a different version each time (a repeat would be recognised and not run again)
                version = data.replace(b'"cells": [', f'"cells": [{{"cell_type": "markdown", "id": "v{i}", '
                                                      f'"metadata": {{}}, "source": "version {i}"}}, '.encode(), 1)
                started = time.perf_counter()
                aid = attempt_id(client.hand_in(args.lab, version, filename=name))
                client.wait_graded(aid, timeout=900)
                solo_client.append(time.perf_counter() - started)
                solo.append(store.find(aid))
            alone = summary("alone (one at a time)", solo, solo_client)

            # 2. a batch handed in at once
            started = time.perf_counter()
            if args.via == "upload":
                clients = {s: service.client(s) for s in students}
                with ThreadPoolExecutor(8) as pool:
                    ids = list(pool.map(lambda s: attempt_id(clients[s].hand_in(args.lab, data, filename=name)),
                                        students))
            else:
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda s: exchange_submit(exchange, tmp / "home" / s, s, args.lab, name, data),
                                  students))
                ids = None
            handed_in = time.perf_counter() - started
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                batch = [a for a in store.all(lab=args.lab) if a.student != "solo"]
                if len(batch) == len(students) and all(a.finished for a in batch):
                    break
                time.sleep(0.5)
            wall = time.perf_counter() - started
            batch = [a for a in store.all(lab=args.lab) if a.student != "solo"]
            assert ids is None or sorted(ids) == sorted(a.id for a in batch)
            scores = {a.score for a in batch}
            figures = summary(f"batch of {len(batch)} at once ({args.via})", batch)
            ideal = len(batch) * alone["run"] / args.workers
            print(f"{'':<34} handed in within {handed_in:.1f} s; all graded after {wall:.1f} s; scores {sorted(scores)}")
            busy = len(batch) * figures["run"] / args.workers  # runs are slower side by side on shared cores
            print(f"ratios: alone latency / own run {alone['median'] / alone['run']:.2f}; "
                  f"batch median / own run {figures['median'] / alone['run']:.1f}; "
                  f"batch wall / (N x run alone / workers) {wall / ideal:.2f}; "
                  f"batch wall / (N x run in the batch / workers) {wall / busy:.2f}")
            first = min(dt.datetime.fromisoformat(a.submitted) for a in batch)
            last = max(dt.datetime.fromisoformat(a.finished) for a in batch)
            print(f"throughput {len(batch) / (last - first).total_seconds() * 60:.1f} submissions/min")
        finally:
            service.stop()
            shutil.rmtree(tmp / "home", ignore_errors=True)


if __name__ == "__main__":
    main()
