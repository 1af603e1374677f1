"""The gradebook on a real PostgreSQL server (Debian's postgresql, started for these tests).

SQLite stays the default; ``--db URL``, ``$AUTOGRADER_DB_URL`` or the nbgrader
config setting ``c.CourseDirectory.db_url`` put it anywhere SQLAlchemy reaches.
Two coordinators grading different labs into one fresh database at once lose
no write.
"""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from conftest import run_cli
from course_factory import TOY_LAB, TOY_NOTEBOOK, fill_answers, make_course, submit, toy_source_notebook
from postgres_server import PostgresServer, cannot_run
from test_grading import ALL_ANSWERS, honest_submissions

pytestmark = pytest.mark.skipif(cannot_run() is not None, reason=cannot_run() or "")

SOLUTION = {"test_square": 2.0, "test_mean": 3.0, "test_total": 1.0, "why_mean": None}


@pytest.fixture(scope="module")
def server():
    with PostgresServer() as pg:
        yield pg


def scores(url: str, lab: str = TOY_LAB) -> dict[str, dict[str, float | None]]:
    with Gradebook(url) as gb:
        return {s.student.id: {g.name: g.auto_score for nb in s.notebooks for g in nb.grades}
                for s in gb.assignment_submissions(lab)}


def toy_course(root: Path) -> Path:
    make_course(root)
    run_cli("release", TOY_LAB, "--course-dir", str(root), "--db", f"sqlite:///{root / 'release.db'}")
    honest_submissions(root)
    return root


def test_grades_go_to_the_server_named_by_db(server, tmp_path):
    url = server.create_database("by_flag")
    root = toy_course(tmp_path / "course")
    run_cli("grade", TOY_LAB, "--course-dir", str(root), "--db", url, "--workers", "2")
    got = scores(url)
    assert got["solution"] == SOLUTION and set(got) == {"solution", "blank", "partial", "raises"}
    assert not (root / "gradebook.db").exists()

    out = tmp_path / "grades.csv"
    run_cli("export", "--course-dir", str(root), "--db", url, "-o", str(out))
    rows = {r["student_id"]: float(r["score"]) for r in csv.DictReader(out.open())}
    assert rows == {"solution": 6.0, "blank": 0.0, "partial": 3.0, "raises": 3.0}


def test_the_nbgrader_config_setting_is_read_by_autograder_and_nbgrader(server, tmp_path):
    url = server.create_database("by_config")
    root = toy_course(tmp_path / "course")
    with open(root / "nbgrader_config.py", "a") as fh:
        fh.write(f"c.CourseDirectory.db_url = {url!r}\n")
    run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", "2")
    assert scores(url)["solution"] == SOLUTION
    assert not (root / "gradebook.db").exists()
    # nbgrader's own apps, run in the course directory, see the same gradebook
    bindir = Path(os.environ["PATH"].split(os.pathsep)[0])
    listed = subprocess.run([str(bindir / "nbgrader"), "db", "student", "list"], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    for student in ("solution", "blank", "partial", "raises"):
        assert student in listed.stdout


def test_two_coordinators_grading_different_labs_at_once_lose_no_write(server, tmp_path):
    url = server.create_database("concurrent")    # fresh: both coordinators create the tables at once
    root = make_course(tmp_path / "course")
    make_course(root, lab="toy2")
    (root / "solutions" / "toy2" / "lab.toml").write_text(
        (root / "solutions" / "toy2" / "lab.toml").read_text().replace('title = "Toy lab"', 'title = "Toy lab 2"'))
    students = [f"s{i:02d}" for i in range(8)]
    for lab in (TOY_LAB, "toy2"):
        run_cli("release", lab, "--course-dir", str(root), "--db", f"sqlite:///{root / 'release.db'}")
        import nbformat

        rel = nbformat.read(root / "labs" / lab / TOY_NOTEBOOK, as_version=4)
        for i, student in enumerate(students):   # even students solve everything, odd ones nothing
            nb = fill_answers(rel, toy_source_notebook(), solved=ALL_ANSWERS if i % 2 == 0 else set())
            submit(root, student, nb, lab=lab)
    env = {**os.environ, "AUTOGRADER_DB_URL": url}
    procs = [subprocess.Popen(["autograder", "grade", lab, "--course-dir", str(root), "--workers", "1",
                               "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lab in (TOY_LAB, "toy2")]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err
        assert "8 submission(s): 8 graded, 0 with errors" in out, out + err
    with Gradebook(url) as gb:
        assert sorted(s.id for s in gb.students) == students       # each student once
        for lab in (TOY_LAB, "toy2"):
            assert len(gb.assignment_submissions(lab)) == 8
    for lab in (TOY_LAB, "toy2"):
        got = scores(url, lab)
        for i, student in enumerate(students):
            expected = 6.0 if i % 2 == 0 else 0.0
            assert sum(v or 0 for v in got[student].values()) == expected, (lab, student, got[student])


def test_an_unreachable_database_is_a_clear_error(tmp_path):
    root = toy_course(tmp_path / "course")
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--db",
                   "postgresql+psycopg2://nobody@127.0.0.1:1/none", check=False, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "gradebook" in proc.stderr.lower() and "127.0.0.1" in proc.stderr


# -- the races themselves, made to happen: processes released at once by a barrier -------------
def _open_at_once(url: str, barrier, out) -> None:
    from autograder.record import GradebookWriter

    barrier.wait()
    try:
        with GradebookWriter(url):
            out.put("ok")
    except Exception as exc:  # noqa: BLE001 -- reported to the test
        out.put(f"{type(exc).__name__}: {exc}")


def _record_at_once(url: str, lab: str, students: list[str], barrier, out) -> None:
    from autograder.record import GradebookWriter
    from autograder.worker import GradingResult

    with GradebookWriter(url) as writer:
        barrier.wait()
        try:
            for student in students:
                writer.record(GradingResult(student=student, lab=lab, digest="d", status="graded"))
            out.put("ok")
        except Exception as exc:  # noqa: BLE001
            out.put(f"{type(exc).__name__}: {exc}")


def _race(target, args_list) -> list[str]:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(len(args_list)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for args in args_list]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return results


def test_processes_opening_a_fresh_gradebook_at_once_all_succeed(server):
    # nbgrader creates its tables (and PostgreSQL enum types) on first use: two at once collide
    url = server.create_database("fresh_race")
    assert _race(_open_at_once, [(url,)] * 4) == ["ok"] * 4


def test_writers_adding_the_same_new_students_at_once_lose_nothing(server):
    url = server.create_database("write_race")
    labs = [f"lab{i}" for i in range(4)]
    with Gradebook(url) as gb:
        for lab in labs:
            gb.add_assignment(lab)
    students = [f"s{i:02d}" for i in range(12)]
    assert _race(_record_at_once, [(url, lab, students) for lab in labs]) == ["ok"] * 4
    with Gradebook(url) as gb:
        assert sorted(s.id for s in gb.students) == students
        for lab in labs:
            assert sorted(s.student.id for s in gb.assignment_submissions(lab)) == students
