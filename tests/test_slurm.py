"""The Slurm backend, on a real one-node cluster started for these tests.

One job array per run, a task per submission, the same worker and sandbox as
the local pool; the coordinator alone writes the gradebook.  A task that fails
is submitted once more, then reported; a killed coordinator's tasks are
cancelled by the next run and nothing is graded or recorded twice.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli
from course_factory import TOY_LAB, fill_answers, submit, toy_source_notebook
from slurm_cluster import SlurmCluster, cannot_run
from test_grading import ALL_ANSWERS, cell_scores, honest_submissions, release_nb

from autograder.slurm import SlurmOptions, _index_list, batch_script, time_limit

pytestmark = pytest.mark.skipif(cannot_run() is not None, reason=cannot_run() or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture
def course(tmp_path):
    from course_factory import make_course

    root = make_course(tmp_path / "course")
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    honest_submissions(root)
    return root


def grade_on_slurm(root: Path, cluster: SlurmCluster, *extra: str, check: bool = True):
    return run_cli("grade", TOY_LAB, "--course-dir", str(root), "--backend", "slurm", "--cpus-per-task", "1",
                   *extra, env={"SLURM_CONF": str(cluster.conf)}, check=check)


def squeue(cluster: SlurmCluster) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T %j"], env=cluster.env, capture_output=True,
                         text=True, check=True)
    return out.stdout.splitlines()


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / ".autograder" / TOY_LAB / "slurm").glob("*"))


# -- the batch script, without a cluster ------------------------------------------------------
def test_index_lists_and_time_limits():
    assert _index_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert _index_list([4]) == "4"
    assert time_limit(600) == "15"       # 600 s * 1.25 + 2 min of start-up, in minutes
    assert time_limit(1) == "3"


def test_batch_script_carries_every_option(tmp_path):
    options = SlurmOptions(partition="gpu", gres="gpu:1", time="0:30:00", cpus_per_task=8, max_concurrent=4,
                           account="course", extra=["--qos=short"])
    script = batch_script("day2-fairness", tmp_path, options, tasks="0-9", task_seconds=600, python="/venv/bin/python")
    directives = [line.split(" ", 1)[1] for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in ("--array=0-9%4", "--partition=gpu", "--gres=gpu:1", "--time=0:30:00", "--cpus-per-task=8",
                     "--account=course", "--qos=short", "--no-requeue", "--job-name=autograde-day2-fairness"):
        assert expected in directives, (expected, directives)
    assert f"/venv/bin/python -m autograder.worker --array {tmp_path / 'jobs'}" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_slurm_options_need_the_slurm_backend(tmp_path):
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(tmp_path), "--partition", "gpu", check=False)
    assert proc.returncode == 2 and "--backend slurm" in proc.stderr


# -- on the cluster ---------------------------------------------------------------------------
def test_a_batch_is_graded_as_one_array_with_the_same_scores_as_locally(course, cluster, tmp_path):
    proc = grade_on_slurm(course, cluster)
    on_slurm = cell_scores(course)
    assert on_slurm["solution"] == {"test_square": 2.0, "test_mean": 3.0, "test_total": 1.0, "why_mean": None}
    assert sum(on_slurm["blank"].values()) == 0
    assert "4 submission(s): 4 graded, 0 with errors" in proc.stdout

    # one array of four tasks, each ran the worker and logged its verdict
    (run_dir,) = run_dirs(course)
    assert len(list((run_dir / "jobs").glob("*.json"))) == 4
    scripts = list(run_dir.glob("grade-*.sbatch"))
    assert len(scripts) == 1 and "#SBATCH --array=0-3" in scripts[0].read_text()
    logs = {p.read_text().strip().split(" ")[0] for p in (run_dir / "logs").glob("*.out")}
    assert logs == {"solution", "blank", "partial", "raises"}

    # the same submissions graded by the local pool score the same, cell by cell
    from course_factory import make_course

    local = make_course(tmp_path / "local")
    run_cli("release", TOY_LAB, "--course-dir", str(local))
    honest_submissions(local)
    run_cli("grade", TOY_LAB, "--course-dir", str(local), "--workers", "2")
    assert cell_scores(local) == on_slurm
    assert not [line for line in squeue(cluster) if "autograde-" in line]


def test_unchanged_submissions_are_not_sent_to_slurm_again(course, cluster):
    grade_on_slurm(course, cluster)
    proc = grade_on_slurm(course, cluster)
    assert proc.stdout.count("unchanged") == 4
    assert len(run_dirs(course)) == 1   # the second run submitted nothing


def _kill_tasks_of(cluster: SlurmCluster, root: Path, student: str, times: int, stop: threading.Event):
    """Cancel the Slurm task grading ``student`` as soon as it runs, ``times`` times (a failing node)."""
    killed = 0
    while not stop.is_set() and killed < times:
        for run_dir in run_dirs(root):
            index = {json.loads(p.read_text())["student"]: int(p.stem) for p in (run_dir / "jobs").glob("*.json")}
            for line in squeue(cluster):
                task, state, _ = line.split(" ", 2)
                if state == "RUNNING" and task.endswith(f"_{index.get(student)}"):
                    subprocess.run(["scancel", "--signal=KILL", task], env=cluster.env, check=True)
                    killed += 1
                    time.sleep(1.0)
        time.sleep(0.1)


def _slow_down(root: Path, student: str) -> None:
    """Make ``student``'s notebook run for a few seconds, so its task can be caught running."""
    rel, src = release_nb(root), toy_source_notebook()
    submit(root, student, fill_answers(rel, src, solved=ALL_ANSWERS, answers={
        "total": "import time\ntime.sleep(6)\ntotal = scale * sum(square(i) for i in range(n))"}))


def _grade_while_killing(course: Path, cluster: SlurmCluster, student: str, times: int):
    """Grade on Slurm while the task of ``student``'s (slowed-down) submission is killed ``times`` times."""
    _slow_down(course, student)
    stop = threading.Event()
    killer = threading.Thread(target=_kill_tasks_of, args=(cluster, course, student, times, stop))
    killer.start()
    try:
        return grade_on_slurm(course, cluster)
    finally:
        stop.set()
        killer.join()


def test_a_failed_task_is_retried_once_and_graded(course, cluster):
    proc = _grade_while_killing(course, cluster, "solution", 1)
    assert "submitting it again" in proc.stderr
    assert cell_scores(course)["solution"]["test_total"] == 1.0
    (run_dir,) = run_dirs(course)
    assert len(list(run_dir.glob("grade-*.sbatch"))) == 2    # the first array, then the retry


def test_a_task_failing_twice_is_reported_and_the_batch_goes_on(course, cluster):
    proc = _grade_while_killing(course, cluster, "solution", 2)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("solution"))
    assert "error" in line and "grading failed on Slurm 2 times" in line and "CANCELLED" in line, proc.stdout
    scores = cell_scores(course)
    assert set(scores["solution"].values()) == {0.0}   # scored 0 for now, with the reason, and ...
    assert scores["partial"] == {"test_square": 2.0, "test_mean": 0.0, "test_total": 1.0, "why_mean": 0.0}
    again = grade_on_slurm(course, cluster)             # ... graded on the next run; the others unchanged
    assert again.stdout.count("unchanged") == 3
    assert cell_scores(course)["solution"]["test_total"] == 1.0


def test_a_killed_coordinator_leaves_nothing_running_and_nothing_twice(course, cluster):
    for student in ("partial", "raises"):
        _slow_down(course, student)
    cmd = ["autograder", "grade", TOY_LAB, "--course-dir", str(course), "--backend", "slurm",
           "--cpus-per-task", "1", "--no-progress"]
    coordinator = subprocess.Popen(cmd, env={**os.environ, "SLURM_CONF": str(cluster.conf)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any("RUNNING" in line for line in squeue(cluster)):
        time.sleep(0.2)
    os.killpg(coordinator.pid, signal.SIGKILL)
    coordinator.wait()
    assert [line for line in squeue(cluster) if "autograde-" in line], "the array should outlive its coordinator"

    proc = grade_on_slurm(course, cluster)       # cancels the orphaned array, grades what is left
    assert "4 submission(s): 4 graded, 0 with errors" in proc.stdout
    assert not [line for line in squeue(cluster) if "autograde-" in line]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        students = [s.student.id for s in gb.assignment_submissions(TOY_LAB)]
    assert sorted(students) == ["blank", "partial", "raises", "solution"]
    assert cell_scores(course)["solution"]["test_total"] == 1.0


def test_sbatch_refusing_the_job_is_a_clear_error(course, cluster):
    proc = grade_on_slurm(course, cluster, "--partition", "no-such-partition", check=False)
    assert proc.returncode == 2
    assert "sbatch refused the grading job" in proc.stderr and "partition" in proc.stderr.lower()
