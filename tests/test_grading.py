"""The grading pipeline on a toy course: parity with nbgrader, tampering, bad input, limits, re-runs."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from conftest import run_cli
from course_factory import (TOY_LAB, TOY_NOTEBOOK, fill_answers, make_course, submit,
                            toy_source_notebook)

ALL_ANSWERS = {"square", "mean", "total", "why_mean"}


def cell_scores(root: Path, lab: str = TOY_LAB) -> dict[str, dict[str, float | None]]:
    """{student: {grade_id: auto_score}} read straight from nbgrader's gradebook."""
    out: dict[str, dict[str, float | None]] = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        for submission in gb.assignment_submissions(lab):
            out[submission.student.id] = {
                grade.name: grade.auto_score for nb in submission.notebooks for grade in nb.grades
            }
    return out


def release_nb(root: Path) -> nbformat.NotebookNode:
    return nbformat.read(root / "labs" / TOY_LAB / TOY_NOTEBOOK, as_version=4)


def honest_submissions(root: Path) -> None:
    rel, src = release_nb(root), toy_source_notebook()
    submit(root, "solution", fill_answers(rel, src, solved=ALL_ANSWERS))
    submit(root, "blank", rel)
    submit(root, "partial", fill_answers(rel, src, solved={"square", "total"}))
    submit(root, "raises", fill_answers(rel, src, solved={"square", "total"},
                                        answers={"mean": "def mean(xs):\n    raise ValueError('not today')"}))


@pytest.fixture(scope="module")
def toy_course(tmp_path_factory) -> Path:
    root = make_course(tmp_path_factory.mktemp("course"))
    run_cli("release", TOY_LAB, "--course-dir", str(root))
    honest_submissions(root)
    rel, src = release_nb(root), toy_source_notebook()

    # tampering: each keeps the partial answers and tries to gain more
    edited = fill_answers(rel, src, solved={"square", "total"})
    for cell in edited.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_mean":
            cell.source = "pass  # tests? what tests"
    submit(root, "edits-test", edited)

    deleted = fill_answers(rel, src, solved={"square", "total"})
    deleted.cells = [c for c in deleted.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "test_mean"]
    submit(root, "deletes-test", deleted)

    inflated = fill_answers(rel, src, solved={"square", "total"})
    for cell in inflated.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            meta["points"] = 100
        if meta.get("grade_id") == "test_mean":  # and turn the failing test into an answer cell
            meta["solution"] = True
            meta["grade"] = False
    submit(root, "inflates-points", inflated)

    kernel = fill_answers(rel, src, solved={"square", "total"})
    kernel.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    submit(root, "changes-kernel", kernel)

    duplicated = fill_answers(rel, src, solved={"square", "total"},
                              answers={"mean": "def mean(xs):\n    return 0"})
    first = next(c for c in duplicated.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "mean")
    twin = nbformat.from_dict(json.loads(json.dumps(first)))
    twin.source = "def mean(xs):\n    return sum(xs) / len(xs)"  # right, but the second copy
    duplicated.cells.append(twin)
    submit(root, "duplicate-grade-id", duplicated)

    submit(root, "invalid-json", b'{"cells": [ this is not json')
    submit(root, "binary-junk", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64)
    latin1 = nbformat.writes(fill_answers(rel, src, solved=ALL_ANSWERS,
                                          answers={"why_mean": "Parce que la moyenne pèse chaque valeur."}))
    submit(root, "latin1-text", latin1.encode("latin-1"))
    submit(root, "not-utf8", b"\xff\xfe\x00junk\x81")
    old = fill_answers(rel, src, solved=ALL_ANSWERS)
    raw = json.loads(nbformat.writes(old))
    raw["nbformat"], raw["nbformat_minor"] = 3, 0
    submit(root, "nbformat3", json.dumps(raw).encode())
    missing = submit(root, "missing-notebook", rel)
    (missing / TOY_NOTEBOOK).rename(missing / "something-else.ipynb")

    # junk beside a good notebook: an extra notebook, a cell with an unknown grade id, a link out of
    # the submission, a file too big to copy -- each is noted and the notebook is still graded
    extra = submit(root, "extra-notebook", fill_answers(rel, src, solved={"square", "total"}))
    nbformat.write(rel, extra / "scratchpad.ipynb")
    unknown = fill_answers(rel, src, solved={"square", "total"})
    unknown.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {
        "grade_id": "bogus", "solution": True, "grade": True, "points": 50, "locked": False, "schema_version": 3}}))
    submit(root, "unknown-grade-id", unknown)
    linked = submit(root, "links-out", fill_answers(rel, src, solved={"square", "total"}))
    (linked / "answers.csv").symlink_to(root / "solutions" / TOY_LAB / TOY_NOTEBOOK)
    big = submit(root, "huge-file", fill_answers(rel, src, solved={"square", "total"}))
    with open(big / "data.bin", "wb") as fh:
        fh.truncate(70 * 2**20)

    proc = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", "2")
    (root / "first-run.txt").write_text(proc.stdout + proc.stderr)
    return root


def test_parity_with_nbgrader_autograde(toy_course, tmp_path):
    """On the same honest submissions nbgrader autograde and we give the same per-cell scores."""
    ours = cell_scores(toy_course)
    twin = tmp_path / "twin"
    twin.mkdir()
    for part in ("solutions", "labs", "nbgrader_config.py"):
        src = toy_course / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, twin / part)
    honest = ["solution", "blank", "partial", "raises"]
    for student in honest:
        shutil.copytree(toy_course / "submitted" / student, twin / "submitted" / student)
    nbgrader = Path(sys.executable).parent / "nbgrader"
    subprocess.run([str(nbgrader), "generate_assignment", TOY_LAB, "--force"], cwd=twin, check=True,
                   capture_output=True)
    proc = subprocess.run([str(nbgrader), "autograde", TOY_LAB, "--force"], cwd=twin, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    theirs = cell_scores(twin)
    for student in honest:
        assert ours[student] == theirs[student], student
    # and the scores are what the answers deserve, not merely equal
    assert ours["solution"] == {"test_square": 2, "test_mean": 3, "test_total": 1, "why_mean": None}
    assert ours["blank"] == {"test_square": 0, "test_mean": 0, "test_total": 0, "why_mean": 0}
    assert ours["partial"] == {"test_square": 2, "test_mean": 0, "test_total": 1, "why_mean": 0}
    assert ours["raises"] == ours["partial"]


@pytest.mark.parametrize("student", ["edits-test", "deletes-test", "inflates-points", "changes-kernel"])
def test_tampering_is_scored_as_the_source_says(toy_course, student):
    scores = cell_scores(toy_course)
    assert scores[student] == scores["partial"]
    with Gradebook(f"sqlite:///{toy_course / 'gradebook.db'}") as gb:
        submission = gb.find_submission(TOY_LAB, student)
        assert submission.max_score == 8  # points come from the source, not the submission


@pytest.mark.parametrize("student,note", [
    ("extra-notebook", None),
    ("unknown-grade-id", None),
    ("duplicate-grade-id", "answer cell 'mean' appears more than once; the first copy was graded"),
    ("links-out", "answers.csv is a link"),
    ("huge-file", "data.bin (70 MiB) left out"),
])
def test_junk_beside_the_notebook_is_noted_and_the_notebook_graded(toy_course, student, note):
    assert cell_scores(toy_course)[student] == cell_scores(toy_course)["partial"]
    graded = (toy_course / "autograded" / student / TOY_LAB / TOY_NOTEBOOK).read_text()
    if note:
        assert note in graded
        line = next(l for l in (toy_course / "first-run.txt").read_text().splitlines() if l.startswith(student))
        assert "note" in line
    assert not (toy_course / "autograded" / student / TOY_LAB / "answers.csv").exists()


@pytest.mark.parametrize("student,cause", [
    ("invalid-json", "not valid notebook JSON"),
    ("binary-junk", "not UTF-8"),
    ("latin1-text", "not UTF-8"),
    ("not-utf8", "not UTF-8"),
    ("nbformat3", "nbformat 3"),
    ("missing-notebook", "missing from the submission"),
])
def test_broken_submission_is_reported_and_scores_zero(toy_course, student, cause):
    report = (toy_course / "first-run.txt").read_text()
    line = next(line for line in report.splitlines() if line.startswith(student + " "))
    assert "error" in line and cause in line
    assert set(cell_scores(toy_course)[student].values()) == {0}
    # the rest of the batch was graded
    assert cell_scores(toy_course)["solution"]["test_mean"] == 3


def test_report_table_and_progress(toy_course):
    report = (toy_course / "first-run.txt").read_text()
    assert "student" in report and "score" in report and "max" in report and "status" in report
    solution = next(line for line in report.splitlines() if line.startswith("solution "))
    assert solution.split()[1:4] == ["6", "8", "graded"]
    assert "grading toy" in report and "submission" in report  # the tqdm bar went to stderr


def test_unchanged_submissions_are_skipped_unless_forced(toy_course):
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(toy_course), "--student", "solution", "partial")
    assert [line.split()[3] for line in proc.stdout.splitlines()[2:4]] == ["unchanged", "unchanged"]
    mtime = (toy_course / "autograded" / "solution" / TOY_LAB / TOY_NOTEBOOK).stat().st_mtime_ns
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(toy_course), "--student", "solution", "--force")
    assert "graded" in proc.stdout.splitlines()[2]
    assert (toy_course / "autograded" / "solution" / TOY_LAB / TOY_NOTEBOOK).stat().st_mtime_ns > mtime


def test_a_changed_submission_is_regraded(toy_course):
    rel, src = release_nb(toy_course), toy_source_notebook()
    submit(toy_course, "improver", fill_answers(rel, src, solved={"square"}))
    run_cli("grade", TOY_LAB, "--course-dir", str(toy_course), "--student", "improver")
    assert cell_scores(toy_course)["improver"]["test_mean"] == 0
    submit(toy_course, "improver", fill_answers(rel, src, solved={"square", "mean"}))
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(toy_course), "--student", "improver")
    assert "graded" in proc.stdout
    assert cell_scores(toy_course)["improver"]["test_mean"] == 3
    with Gradebook(f"sqlite:///{toy_course / 'gradebook.db'}") as gb:  # one row, not two
        assert sum(s.student.id == "improver" for s in gb.assignment_submissions(TOY_LAB)) == 1


def test_feedback_has_scores_but_no_hidden_tests_or_solutions(toy_course):
    run_cli("feedback", TOY_LAB, "--course-dir", str(toy_course))
    html = (toy_course / "feedback" / "partial" / TOY_LAB / "toy.html").read_text()
    assert "square" in html and "Score" in html
    for secret in ("BEGIN HIDDEN TESTS", "square(-4)", "mean([0.5, 1.5])", "every value enters the sum"):
        assert secret not in html
    broken = (toy_course / "feedback" / "invalid-json" / TOY_LAB / "toy.html").read_text()
    assert "could not be graded" in broken


def test_export_csv_has_one_row_per_student_and_lab(toy_course, tmp_path):
    out = tmp_path / "grades.csv"
    run_cli("export", "--course-dir", str(toy_course), "-o", str(out))
    rows = list(csv.DictReader(out.open()))
    assert {"student_id", "assignment", "score", "max_score"} <= set(rows[0])
    by_student = {r["student_id"]: r for r in rows if r["assignment"] == TOY_LAB}
    assert len(by_student) == len([r for r in rows if r["assignment"] == TOY_LAB])
    assert float(by_student["solution"]["score"]) == 6.0  # the written answer waits for a person
    assert float(by_student["solution"]["max_score"]) == 8.0
    assert float(by_student["blank"]["score"]) == 0.0


def test_unknown_lab_is_a_clear_error(toy_course):
    proc = run_cli("grade", "no-such-lab", "--course-dir", str(toy_course), check=False)
    assert proc.returncode == 2
    assert "no lab 'no-such-lab'" in proc.stderr and TOY_LAB in proc.stderr


def test_a_worker_grades_a_job_file_on_its_own(toy_course, tmp_path):
    """A job is plain JSON: a worker needs nothing else (the shape of a Slurm array task)."""
    from autograder.coordinator import Coordinator, GradeOptions
    from autograder.course import Course

    course = Course(toy_course)
    coordinator = Coordinator(course, course.lab(TOY_LAB), GradeOptions())
    coordinator.prepare_templates()
    job = coordinator.job_for("partial")
    job.result_path = str(tmp_path / "result.json")
    job.output_dir = str(tmp_path / "autograded")
    (tmp_path / "job.json").write_text(job.to_json())
    proc = subprocess.run([sys.executable, "-m", "autograder.worker", str(tmp_path / "job.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("partial toy: 3/8 graded")
    result = json.loads((tmp_path / "result.json").read_text())
    assert {s["grade_id"]: s["auto_score"] for s in result["scores"]} == \
        {"test_square": 2.0, "test_mean": 0.0, "test_total": 1.0, "why_mean": 0.0}
    assert (tmp_path / "autograded" / TOY_NOTEBOOK).is_file()


def test_a_manual_grade_survives_a_regrade(toy_course):
    """Grades given in formgrader are the instructor's: a regrade writes only the autograder's part."""
    with Gradebook(f"sqlite:///{toy_course / 'gradebook.db'}") as gb:
        grade = gb.find_grade("why_mean", "toy", TOY_LAB, "solution")
        grade.manual_score = 1.5
        comment = gb.find_comment("why_mean", "toy", TOY_LAB, "solution")
        comment.manual_comment = "Good, but say why the weight matters."
        gb.db.commit()
    run_cli("grade", TOY_LAB, "--course-dir", str(toy_course), "--student", "solution", "--force")
    with Gradebook(f"sqlite:///{toy_course / 'gradebook.db'}") as gb:
        grade = gb.find_grade("why_mean", "toy", TOY_LAB, "solution")
        assert grade.manual_score == 1.5 and grade.score == 1.5
        assert gb.find_comment("why_mean", "toy", TOY_LAB, "solution").manual_comment.startswith("Good")
        assert gb.find_submission(TOY_LAB, "solution").score == 7.5  # 6 autograded + 1.5 by hand


def test_a_changed_written_answer_loses_its_manual_grade_and_the_instructor_is_told(toy_course):
    """A grade given for one answer is not silently kept for another: cleared, logged, reported."""
    with Gradebook(f"sqlite:///{toy_course / 'gradebook.db'}") as gb:
        gb.find_grade("why_mean", "toy", TOY_LAB, "partial").manual_score = 2
        gb.find_grade("test_square", "toy", TOY_LAB, "partial").manual_score = 1  # an override, answer unchanged
        gb.find_comment("why_mean", "toy", TOY_LAB, "partial").manual_comment = "Spot on."
        gb.db.commit()
    rel, src = release_nb(toy_course), toy_source_notebook()
    submit(toy_course, "partial", fill_answers(rel, src, solved={"square", "total"},
                                               answers={"why_mean": "Because it is an average, now reworded."}))
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(toy_course), "--student", "partial", "--no-progress")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("partial "))
    assert "answer changed since graded by hand: why_mean" in line, line
    with Gradebook(f"sqlite:///{toy_course / 'gradebook.db'}") as gb:
        assert gb.find_grade("why_mean", "toy", TOY_LAB, "partial").manual_score is None
        assert gb.find_grade("why_mean", "toy", TOY_LAB, "partial").needs_manual_grade
        assert gb.find_comment("why_mean", "toy", TOY_LAB, "partial").manual_comment is None
        assert gb.find_grade("test_square", "toy", TOY_LAB, "partial").manual_score == 1  # kept
    log = [json.loads(l) for l in (toy_course / ".autograder" / TOY_LAB / "cleared-manual-grades.jsonl")
           .read_text().splitlines()]
    assert [(e["student"], e["cell"], e["manual_score"], e["comment"]) for e in log] == \
        [("partial", "toy/why_mean", 2.0, "Spot on.")]
    # the same submission again: nothing changed, nothing more to say
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(toy_course), "--student", "partial", "--force",
                   "--no-progress")
    assert "graded by hand" not in proc.stdout
