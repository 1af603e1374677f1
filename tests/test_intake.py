"""``autograder watch``: each submission graded as it arrives, on nbgrader's own exchange.

Students use nbgrader's real commands (``fetch_assignment``, ``submit``,
``fetch_feedback``); the instructor publishes with ``autograder release
--exchange`` and runs ``autograder watch``.  What must hold: feedback reaches
the student through ``fetch_feedback``; a loop that was down picks up what
arrived meanwhile; the newest version is the one graded; the same version is
never run twice; a loop killed while grading loses and doubles nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from autograder.attempts import AttemptStore
from autograder.course import COURSE_ID, Course, CourseError
from conftest import run_cli
from course_factory import TOY_LAB, TOY_NOTEBOOK, fill_answers, make_course, submit, toy_source_notebook

SOLVED = {"square", "mean", "total", "why_mean"}


class Hub:
    """A course published to an nbgrader exchange, and students with home directories."""

    def __init__(self, root: Path, source_nb=None):
        self.root = root
        self.course_dir = make_course(root / "course", source_nb)
        self.exchange = root / "exchange"
        self.env = {"AUTOGRADER_EXCHANGE": str(self.exchange)}
        run_cli("release", TOY_LAB, "--course-dir", str(self.course_dir), "--exchange", env=self.env)
        self.source = source_nb or toy_source_notebook()

    def nbgrader(self, student: str, *args: str) -> subprocess.CompletedProcess:
        home = self.root / "home" / student
        home.mkdir(parents=True, exist_ok=True)
        cmd = [shutil.which("nbgrader"), *args, "--course", COURSE_ID, f"--Exchange.root={self.exchange}"]
        proc = subprocess.run(cmd, cwd=home, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": str(home)})
        assert proc.returncode == 0, proc.stderr
        return proc

    def notebook(self, student: str) -> Path:
        return self.root / "home" / student / TOY_LAB / TOY_NOTEBOOK

    def hand_in(self, student: str, nb=None, raw: bytes | None = None) -> None:
        """fetch (first time), write the student's notebook, nbgrader submit."""
        if not self.notebook(student).exists():
            self.nbgrader(student, "fetch_assignment", TOY_LAB)
        if raw is not None:
            self.notebook(student).write_bytes(raw)
        else:
            nbformat.write(nb, self.notebook(student))
        self.nbgrader(student, "submit", TOY_LAB, "--student", student)

    def solved(self, solved=SOLVED, answers=None):
        release = nbformat.read(self.course_dir / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4)
        return fill_answers(release, self.source, answers=answers, solved=solved)

    def fetch_feedback(self, student: str) -> list[Path]:
        self.nbgrader(student, "fetch_feedback", TOY_LAB, "--student", student)
        return sorted((self.root / "home" / student / TOY_LAB / "feedback").glob("*/*.html"))

    def watch(self, *args: str, check=True, timeout=300) -> subprocess.CompletedProcess:
        return run_cli("watch", "--course-dir", str(self.course_dir), "--workers", "2", *args, env=self.env,
                       check=check, timeout=timeout)

    def start_watch(self) -> subprocess.Popen:
        return subprocess.Popen([shutil.which("autograder"), "watch", "--course-dir", str(self.course_dir),
                                 "--workers", "2", "--poll", "0.2"], env={**os.environ, **self.env},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def attempts(self, student: str):
        return AttemptStore(Course(self.course_dir)).all(lab=TOY_LAB, student=student)

    def gradebook_rows(self) -> list[tuple[str, float]]:
        from nbgrader.api import Gradebook

        with Gradebook(f"sqlite:///{self.course_dir / 'gradebook.db'}") as gb:
            return sorted((s.student.id, s.score) for s in gb.find_assignment(TOY_LAB).submissions)


@pytest.fixture
def hub(tmp_path):
    return Hub(tmp_path)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the watch loop exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out


def test_a_submission_through_nbgraders_exchange_gets_feedback_through_fetch_feedback(hub):
    loop = hub.start_watch()
    try:
        hub.hand_in("alice", hub.solved())
        hub.hand_in("bob", raw=b'{"cells": [ this is not json')
        feedback = wait_for(lambda: hub.fetch_feedback("alice"), 120, "alice's feedback", loop)
        wait_for(lambda: all(a.status == "error" for a in hub.attempts("bob")), 60, "bob's verdict", loop)
    finally:
        out = stop(loop)
    html = feedback[0].read_text()
    assert "square(-4)" not in html and "hidden tests not shown" in html  # hidden tests redacted
    (alice,), (bob,) = hub.attempts("alice"), hub.attempts("bob")
    assert (alice.status, alice.score, alice.max_score - alice.manual_pending) == ("graded", 6.0, 6.0)
    assert alice.source == "exchange" and alice.feedback == ["toy.html"] and alice.latency < 120
    assert (bob.status, bob.score) == ("error", 0.0) and "toy.ipynb" in bob.message
    assert hub.gradebook_rows() == [("alice", 8.0 - 2.0), ("bob", 0.0)]
    assert "alice toy: graded 6/8 (+2 by hand)" in out and "bob toy: error 0/8" in out


def test_what_arrived_while_down_is_graded_newest_first_and_never_twice(hub):
    first = hub.solved(solved={"square"})
    second = hub.solved()
    hub.hand_in("alice", first)
    time.sleep(0.01)
    hub.hand_in("alice", second)
    out = hub.watch("--once").stdout
    older, newer = hub.attempts("alice")
    assert older.status == "superseded" and newer.id in older.message
    assert (newer.status, newer.score) == ("graded", 6.0)
    assert out.count("grading toy") == 1
    result = Path(hub.course_dir / ".autograder" / TOY_LAB / "results" / "alice.json")
    ran_at = result.stat().st_mtime_ns

    # the same version handed in again: recorded, not run again, and its feedback still reaches the student
    hub.hand_in("alice", second)
    hub.watch("--once")
    again = hub.attempts("alice")[-1]
    assert (again.status, again.score) == ("graded", 6.0) and "not run again" in again.message
    assert result.stat().st_mtime_ns == ran_at
    assert len(hub.fetch_feedback("alice")) == 2  # one per graded submission (the superseded has none)

    # nothing new: nothing graded
    assert "grading" not in hub.watch("--once").stdout
    assert hub.gradebook_rows() == [("alice", 6.0)]
    listed = run_cli("attempts", TOY_LAB, "--course-dir", str(hub.course_dir)).stdout
    assert listed.count("alice") == 3 and "superseded" in listed and "not run again" in listed
    assert run_cli("attempts", "--waiting", "--course-dir", str(hub.course_dir)).stdout.strip() == "no attempts"


def test_a_loop_killed_while_grading_loses_and_doubles_nothing(tmp_path):
    slow = toy_source_notebook([new_code_cell("import time\ntime.sleep(4)")])
    hub = Hub(tmp_path, slow)
    hub.hand_in("alice", hub.solved())
    loop = hub.start_watch()
    wait_for(lambda: [a for a in hub.attempts("alice") if a.status == "grading"], 60, "grading to start", loop)
    # a second loop on the same course is refused while the first runs
    refused = hub.watch("--once", check=False)
    assert refused.returncode == 2 and "already runs on this course" in refused.stderr
    os.killpg(loop.pid, signal.SIGKILL)  # the loop and its workers, mid-grade
    loop.wait()
    hub.watch("--once")
    (attempt,) = hub.attempts("alice")
    assert (attempt.status, attempt.score) == ("graded", 6.0)
    assert hub.gradebook_rows() == [("alice", 6.0)]
    assert len(hub.fetch_feedback("alice")) == 1


def test_a_new_version_in_submitted_is_graded_once(tmp_path):
    root = make_course(tmp_path / "course")
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    release = nbformat.read(root / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4)
    submit(root, "carol", fill_answers(release, toy_source_notebook(), solved=SOLVED))
    env = {"AUTOGRADER_EXCHANGE": str(tmp_path / "exchange")}
    first = run_cli("watch", "--course-dir", str(root), "--once", env=env).stdout
    assert "carol toy: new version" in first and "carol toy: graded 6/8" in first
    assert "grading" not in run_cli("watch", "--course-dir", str(root), "--once", env=env).stdout
    submit(root, "carol", fill_answers(release, toy_source_notebook(), solved={"mean"}),
           timestamp="2026-11-21 10:00:00.000000 UTC")
    assert "carol toy: graded 3/8" in run_cli("watch", "--course-dir", str(root), "--once", env=env).stdout
    attempts = AttemptStore(Course(root)).all(student="carol")
    assert [a.score for a in attempts] == [6.0, 3.0] and {a.source for a in attempts} == {"submitted"}


def test_submissions_a_batch_already_graded_are_not_graded_again(tmp_path):
    root = make_course(tmp_path / "course")
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    release = nbformat.read(root / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4)
    for student in ("gina", "hal"):
        submit(root, student, fill_answers(release, toy_source_notebook(), solved=SOLVED))
    run_cli("grade", TOY_LAB, "--course-dir", str(root))
    submit(root, "hal", fill_answers(release, toy_source_notebook(), solved={"square"}))  # changed since
    env = {"AUTOGRADER_EXCHANGE": str(tmp_path / "exchange")}
    out = run_cli("watch", "--course-dir", str(root), "--once", env=env).stdout
    assert "grading toy: hal" in out and "gina" not in out
    assert [a.student for a in AttemptStore(Course(root)).all()] == ["hal"]


def test_attempts_are_stored_whole_and_by_seed_once(tmp_path):
    root = make_course(tmp_path)
    store = AttemptStore(Course(root))
    one = store.add("alice", TOY_LAB, {TOY_NOTEBOOK: b"{}"}, "exchange", seed="entry-1")
    again = store.add("alice", TOY_LAB, {TOY_NOTEBOOK: b"{}"}, "exchange", seed="entry-1")
    assert again.id == one.id and len(store.all()) == 1
    # what a killed writer leaves half-written is never an attempt
    (store.root / ".incoming" / "x" / "files").mkdir(parents=True)
    assert [a.id for a in store.all()] == [one.id] and store.find(one.id).student == "alice"
    for bad in ("../bob", "a/b", "", "x" * 65, "+alice"):
        with pytest.raises(CourseError):
            store.add(bad, TOY_LAB, {TOY_NOTEBOOK: b"{}"}, "upload")
    with pytest.raises(CourseError, match="no lab"):
        store.add("alice", "nope", {TOY_NOTEBOOK: b"{}"}, "upload")
    with pytest.raises(CourseError, match="plain file name"):
        store.add("alice", TOY_LAB, {"../x.ipynb": b"{}"}, "upload")
    # the queue lists what waits; a marker whose attempt was never stored (a crash in add) goes away
    assert [a.id for a in store.waiting()] == [one.id]
    lost = store.root / ".queue" / "20260101T000000000000Z-0000000000000000"
    lost.write_text(f"{TOY_LAB}/alice/20260101T000000000000Z-0000000000000000")
    assert [a.id for a in store.waiting()] == [one.id] and lost.exists()
    os.utime(lost, (time.time() - 120, time.time() - 120))
    store.waiting()
    assert not lost.exists()
    one.status = "graded"
    store.save(one)
    assert store.waiting() == [] and store.find(one.id).status == "graded"
    other = one.id[:-1] + ("0" if one.id[-1] != "0" else "1")
    assert store.find("../../etc") is None and store.find(other) is None
    assert json.loads((store.path(one) / "attempt.json").read_text())["status"] == "graded"
