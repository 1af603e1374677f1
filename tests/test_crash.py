"""kill -9 the coordinator or a worker at random moments; the same command again finishes the batch.

Every submission ends graded once with the scores an undisturbed run gives, the gradebook holds one
row per student, and nothing half-written is left behind.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import psutil

from conftest import run_cli
from course_factory import TOY_LAB, TOY_NOTEBOOK, fill_answers, make_course, submit, toy_source_notebook
from test_grading import ALL_ANSWERS, cell_scores

SUBMISSIONS = {
    "s0": ALL_ANSWERS, "s1": set(), "s2": {"square"}, "s3": {"square", "mean"}, "s4": {"mean", "total"},
    "s5": ALL_ANSWERS, "s6": {"total"}, "s7": {"square", "total", "why_mean"},
}


def build(root: Path) -> Path:
    make_course(root)
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    rel = nbformat.read(root / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4)
    src = toy_source_notebook()
    for student, solved in SUBMISSIONS.items():
        # a little real work per notebook so kills land in the middle of grading
        nb = fill_answers(rel, src, solved=solved)
        nb.cells.insert(2, nbformat.v4.new_code_cell("import time\ntime.sleep(0.7)"))
        submit(root, student, nb)
    return root


def grade(root: Path) -> subprocess.Popen:
    return subprocess.Popen([shutil.which("autograder"), "grade", TOY_LAB, "--course-dir", str(root),
                             "--workers", "2", "--no-progress"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_killing_coordinator_and_workers_loses_nothing_and_doubles_nothing(tmp_path):
    reference = build(tmp_path / "reference")
    run_cli("grade", TOY_LAB, "--course-dir", str(reference), "--workers", "2")
    expected = cell_scores(reference)
    assert len(expected) == len(SUBMISSIONS)

    root = build(tmp_path / "crashed")
    rng = random.Random(20261123)
    for attempt in range(6):
        proc = grade(root)
        time.sleep(rng.uniform(0.3, 3.0))
        if attempt % 2 and proc.poll() is None:
            # kill one worker (a child of the coordinator), then the coordinator a moment later
            children = psutil.Process(proc.pid).children()
            if children:
                rng.choice(children).kill()
            time.sleep(rng.uniform(0.1, 1.0))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)
    final = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", "2", timeout=300)

    assert cell_scores(root) == expected, final.stdout
    for line in final.stdout.splitlines()[2:2 + len(SUBMISSIONS)]:
        assert line.split()[3] in ("graded", "unchanged"), line
    # nothing half-written: no temp files, every notebook and result parses
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".started")]
    assert not leftovers, leftovers
    for path in (root / "autograded").rglob("*.ipynb"):
        nbformat.read(path, as_version=4)
    for path in (root / ".autograder").rglob("*.json"):
        json.loads(path.read_text())
    # no scratch directory is left, and no kernel or worker of this course outlives the runs
    assert not list((root / ".autograder" / TOY_LAB / "scratch").glob("*"))
    time.sleep(2.0)
    stray = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(root) in " ".join(p.info["cmdline"] or []) + (p.info["cwd"] or ""):
                stray.append(p.info)
        except psutil.Error:
            pass
    assert not stray, stray


def test_a_second_coordinator_on_the_same_lab_is_refused(tmp_path):
    root = build(tmp_path / "course")
    first = grade(root)
    try:
        time.sleep(1.5)
        second = run_cli("grade", TOY_LAB, "--course-dir", str(root), check=False)
        assert second.returncode == 2
        assert "is grading toy on this course" in second.stderr
    finally:
        first.kill()
        first.wait()
