"""Time limits: a slow cell is interrupted and the rest still score; past the notebook limit the kernel dies."""
from __future__ import annotations

import pytest

from conftest import run_cli
from course_factory import released_course, TOY_LAB, fill_answers, submit
from test_grading import ALL_ANSWERS, cell_scores


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    root, rel, src = released_course(tmp_path_factory.mktemp("limits"))
    loop = "def square(x):\n    while True:\n        pass"
    # the slow answer only *defines* square; the test cell calling it hangs
    submit(root, "loops", fill_answers(rel, src, solved=ALL_ANSWERS - {"square"}, answers={"square": loop}))
    sleeper = "import time\ntime.sleep(3600)\ndef square(x):\n    return x * x"
    submit(root, "sleeps", fill_answers(rel, src, solved=ALL_ANSWERS - {"square"}, answers={"square": sleeper}))
    ignores = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
               "while True:\n    pass")
    submit(root, "ignores-interrupt", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": ignores}))
    hog = "blob = b'x' * (3 * 2**30)\ndef mean(xs):\n    return sum(xs) / len(xs)"
    submit(root, "memory-hog", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": hog}))
    # 100 MiB into the working directory, then into /tmp: both are on the 64 MiB the kernel may write
    filler = ("for where in ['fill.bin', '/tmp/fill.bin']:\n"
              "    try:\n"
              "        open(where, 'wb').write(b'x' * (100 * 2**20))\n"
              "    except OSError as exc:\n"
              "        print(where, exc)\n"
              "open('/tmp/more.bin', 'wb').write(b'x' * 2**20)  # the disk is full: this fails\n"
              "def mean(xs):\n    return sum(xs) / len(xs)")
    submit(root, "fills-disk", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": filler}))
    submit(root, "honest", fill_answers(rel, src, solved=ALL_ANSWERS))
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--cell-timeout", "3", "--timeout", "20",
                   "--memory-limit", "700M", "--disk-limit", "64M", "--workers", "2", timeout=300)
    return root, proc.stdout


@pytest.fixture(scope="module")
def fallback(tmp_path_factory):
    """Where no cgroup can be made (here: turned off), memory is capped per process with RLIMIT_DATA."""
    root, rel, src = released_course(tmp_path_factory.mktemp("rlimits"))
    hog = "blob = bytearray(3 * 2**30)\ndef mean(xs):\n    return sum(xs) / len(xs)"
    submit(root, "memory-hog", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": hog}))
    submit(root, "honest", fill_answers(rel, src, solved=ALL_ANSWERS))
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--memory-limit", "700M", "--workers", "2",
                   env={"AUTOGRADER_CGROUPS": "off"}, timeout=300)
    return root, proc.stdout, proc.stderr


def test_slow_cell_is_interrupted_and_later_cells_still_score(limited):
    root, report = limited
    scores = cell_scores(root)
    # the test calling the looping square() times out; mean and total still earn their points
    # (total uses square too, so it fails as well: honest consequences, not a dead notebook)
    assert scores["loops"]["test_square"] == 0
    assert scores["loops"]["test_mean"] == 3
    assert scores["sleeps"] == {"test_square": 0, "test_mean": 3, "test_total": 0, "why_mean": None}
    line = next(l for l in report.splitlines() if l.startswith("loops "))
    assert "cell time limit hit in toy.ipynb cell test_square" in line


def test_notebook_limit_kills_a_kernel_that_ignores_interrupts(limited):
    root, report = limited
    scores = cell_scores(root)
    # square was answered before the runaway cell: its points stand; cells after the kill score 0
    assert scores["ignores-interrupt"]["test_square"] == 2
    assert scores["ignores-interrupt"]["test_mean"] == 0
    assert scores["ignores-interrupt"]["test_total"] == 0
    line = next(l for l in report.splitlines() if l.startswith("ignores-interrupt "))
    assert "notebook time limit" in line


def test_honest_submission_unaffected_by_neighbours(limited):
    root, _ = limited
    assert cell_scores(root)["honest"] == {"test_square": 2, "test_mean": 3, "test_total": 1, "why_mean": None}


def test_memory_limit_kills_only_that_kernel_and_says_so(limited):
    from autograder.limits import memory_cgroup_support

    root, report = limited
    if memory_cgroup_support()[0] is None:
        pytest.skip(memory_cgroup_support()[1])
    scores = cell_scores(root)
    # square was answered before the hog: it stands; the kernel died in the hog's cell
    assert scores["memory-hog"]["test_square"] == 2
    assert scores["memory-hog"]["test_mean"] == 0
    line = next(l for l in report.splitlines() if l.startswith("memory-hog "))
    assert "memory limit hit in toy.ipynb" in line


def test_disk_limit_fails_the_writing_cell_and_says_so(limited):
    root, report = limited
    scores = cell_scores(root)
    # the cell that filled the disk failed, so mean was never defined; the rest still score
    assert scores["fills-disk"] == {"test_square": 2, "test_mean": 0, "test_total": 1, "why_mean": None}
    graded = (root / "autograded" / "fills-disk" / TOY_LAB / "toy.ipynb").read_text()
    assert graded.count("No space left on device") >= 2  # the working directory and /tmp share the cap
    line = next(l for l in report.splitlines() if l.startswith("fills-disk "))
    assert "disk limit hit in toy.ipynb cell mean" in line, line
    assert not list((root / ".autograder").rglob("fill.bin"))  # nothing of it reached the grader's disk


def test_without_cgroups_memory_is_capped_per_process(fallback):
    root, report, errors = fallback
    assert "RLIMIT_DATA" in errors  # the instructor is told which limit applies
    scores = cell_scores(root)
    assert scores["memory-hog"] == {"test_square": 2, "test_mean": 0, "test_total": 1, "why_mean": None}
    assert scores["honest"] == {"test_square": 2, "test_mean": 3, "test_total": 1, "why_mean": None}
    line = next(l for l in report.splitlines() if l.startswith("memory-hog "))
    assert "memory limit hit in toy.ipynb cell mean" in line, line
    assert "MemoryError" in (root / "autograded" / "memory-hog" / TOY_LAB / "toy.ipynb").read_text()
