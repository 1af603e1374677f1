"""Hostile submissions graded in the sandbox: each attack fails, the batch goes on, no host file changes.

Each hostile answer defines ``mean`` correctly only if its attack *failed*, so the gradebook itself
says whether the sandbox held: test_mean earns its 3 points exactly when the attack was contained.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import psutil
import pytest

from autograder.sandbox import bwrap_available
from conftest import run_cli
from corpus import GRADE_FLAGS, host_listener, submit_corpus
from course_factory import released_course, TOY_LAB, TOY_NOTEBOOK
from test_grading import cell_scores

pytestmark = pytest.mark.skipif(not bwrap_available()[0], reason=bwrap_available()[1])

def foreign_pid_namespaces() -> set[tuple[int, str]]:
    """(pid, namespace) of the live processes in a PID namespace other than ours: sandboxes, containers.

    Zombies are dead already (a killed sandbox's ``bwrap`` waits there until init reaps it)."""
    own = os.readlink("/proc/self/ns/pid")
    out = set()
    for pid in psutil.pids():
        try:
            ns = os.readlink(f"/proc/{pid}/ns/pid")
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        if ns != own:
            out.add((pid, ns))
    return out


def digest_tree(root: Path, skip: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and not rel.startswith(skip):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root, rel, src = released_course(tmp_path_factory.mktemp("hostile"))

    with host_listener() as (port, connections):
        expected = submit_corpus(root, rel, src, port)
        sandboxes_before = foreign_pid_namespaces()
        before = digest_tree(root, skip=(".autograder", "autograded", "gradebook.db"))
        proc = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", "2", *GRADE_FLAGS, timeout=600)
        left = foreign_pid_namespaces() - sandboxes_before
        after = digest_tree(root, skip=(".autograder", "autograded", "gradebook.db"))
    return root, proc.stdout, expected, before, after, connections, left


def test_every_attack_is_contained(hostile):
    """Each attack scores exactly what the source's tests give when it fails: nothing more, nothing less."""
    root, report, expected, *_ = hostile
    scores = cell_scores(root)
    assert len(expected) >= 13
    wrong = {student: scores[student] for student, allowed in expected.items() if scores[student] not in allowed}
    assert wrong == {}, f"not contained: {wrong}\n{report}"
    assert scores["honest"] == {"test_square": 2, "test_mean": 3, "test_total": 1, "why_mean": None}


def test_limits_are_named_in_the_report(hostile):
    root, report, *_ = hostile
    lines = {line.split()[0]: line for line in report.splitlines() if line.strip()}
    assert "kernel died in toy.ipynb" in lines["exits"]
    assert "cell time limit hit in toy.ipynb cell mean" in lines["infinite-loop"]
    assert "disk limit hit" not in lines["fills-disk"]  # it caught its own error: no cell failed
    assert "memory limit hit in toy.ipynb cell mean" in lines["memory-bomb"]


def test_no_sandbox_process_outlives_its_grading(hostile):
    """Daemons, fork-bomb children, runaway loops: no process of any sandbox is left."""
    *_, left = hostile
    assert left == set()


def test_no_connection_reached_the_host(hostile):
    connections = hostile[5]
    assert connections == []


def test_no_course_file_changed(hostile):
    root, report, attacks, before, after, *_ = hostile
    assert before == after
    with open(root / "gradebook.db", "rb") as fh:
        assert b"pwned" not in fh.read()


def test_a_fork_bomb_is_capped_and_reported(hostile):
    from autograder.limits import _v1_pids_parent, _v2_parent

    root, report, *_ = hostile
    if _v1_pids_parent() is None and _v2_parent() is None:
        pytest.skip("no pids cgroup controller here")
    line = next(l for l in report.splitlines() if l.startswith("fork-bomb "))
    assert "process limit hit" in line or "memory limit hit" in line


def test_a_200_mb_print_leaves_a_small_notebook_with_a_note(hostile):
    root, report, *_ = hostile
    graded = root / "autograded" / "floods-output" / TOY_LAB / TOY_NOTEBOOK
    assert graded.stat().st_size < 3_000_000
    assert "the rest was dropped" in graded.read_text()
    assert cell_scores(root)["floods-output"]["test_mean"] == 3
    line = next(l for l in report.splitlines() if l.startswith("floods-output "))
    assert "output limit hit in toy.ipynb cell mean" in line
