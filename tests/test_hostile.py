"""Hostile submissions graded in the sandbox: each attack fails, the batch goes on, no host file changes.

Each hostile answer defines ``mean`` correctly only if its attack *failed*, so the gradebook itself
says whether the sandbox held: test_mean earns its 3 points exactly when the attack was contained.
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from autograder.sandbox import bwrap_available
from conftest import run_cli
from course_factory import released_course, TOY_LAB, TOY_NOTEBOOK, fill_answers, submit
from test_grading import ALL_ANSWERS, cell_scores

pytestmark = pytest.mark.skipif(not bwrap_available()[0], reason=bwrap_available()[1])

MEAN_IF_CONTAINED = """
def mean(xs):
    if attack_worked:
        raise RuntimeError("the attack worked")
    return sum(xs) / len(xs)
"""


def attack(code: str) -> str:
    return f"attack_worked = False\ntry:\n{_indent(code)}\nexcept Exception:\n    attack_worked = False\n" + \
        MEAN_IF_CONTAINED


def _indent(code: str) -> str:
    return "\n".join("    " + line for line in code.strip().splitlines())


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

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connections: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()

    secret = root / "solutions" / TOY_LAB / TOY_NOTEBOOK
    attacks = {
        "network": f"socket_mod = __import__('socket')\n"
                   f"socket_mod.create_connection(('127.0.0.1', {port}), timeout=2)\nattack_worked = True",
        "reads-solutions": f"open({str(secret)!r}).read()\nattack_worked = True",
        "reads-classmates": f"open({str(root / 'submitted' / 'honest' / TOY_LAB / TOY_NOTEBOOK)!r}).read()\n"
                            "attack_worked = True",
        # look in every file outside the system trees for this lab's hidden test
        "searches-disk": "import os\nfound = []\n"
                         "for d, dirs, fs in os.walk('/'):\n"
                         "    dirs[:] = [x for x in dirs if os.path.join(d, x) not in ('/proc', '/sys', '/dev', '/usr')]\n"
                         "    for f in fs:\n"
                         "        try:\n"
                         "            if 'square(-4) == 16' in open(os.path.join(d, f), errors='ignore').read(1 << 20):\n"
                         "                found.append(os.path.join(d, f))\n"
                         "        except OSError:\n"
                         "            pass\n"
                         "attack_worked = bool(found)",
        # append to every file it can find outside its own directory, the gradebook above all
        "writes-everything": "import os\nhere = os.getcwd()\n"
                             "for d, dirs, fs in os.walk('/'):\n"
                             "    dirs[:] = [x for x in dirs if os.path.join(d, x) not in ('/proc', '/sys', '/dev')]\n"
                             "    for f in fs:\n"
                             "        path = os.path.join(d, f)\n"
                             "        if path.startswith(here) or path.startswith('/tmp') or os.path.islink(path):\n"
                             "            continue\n"
                             "        try:\n"
                             "            open(path, 'a').write('pwned')\n"
                             "            attack_worked = True\n"
                             "        except OSError:\n"
                             "            pass",
        "reads-home": "open('/root/.bashrc').read()\nattack_worked = True",
    }
    for student, code in attacks.items():
        submit(root, student, fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": attack(code)}))
    daemon = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        while True:\n"
              "            open('still-here.txt', 'a').write('x')\n"
              "            time.sleep(0.1)\n"
              "    os._exit(0)\n"
              "def mean(xs):\n    return sum(xs) / len(xs)")
    submit(root, "daemon", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": daemon}))
    bomb = ("import os, time\nforked = 0\n"
            "try:\n"
            "    for _ in range(100_000):\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(120)\n"
            "            os._exit(0)\n"
            "        forked += 1\n"
            "except OSError:\n"
            "    pass\n"
            "def mean(xs):\n    return sum(xs) / len(xs)")
    submit(root, "fork-bomb", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": bomb}))
    shout = "print('x' * 200_000_000)\ndef mean(xs):\n    return sum(xs) / len(xs)"
    submit(root, "floods-output", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": shout}))
    submit(root, "exits", fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"},
                                       answers={"mean": "import os\nos._exit(3)"}))
    submit(root, "honest", fill_answers(rel, src, solved=ALL_ANSWERS))

    before = digest_tree(root, skip=(".autograder", "autograded", "gradebook.db"))
    proc = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", "2", "--timeout", "60", timeout=600)
    after = digest_tree(root, skip=(".autograder", "autograded", "gradebook.db"))
    stop.set()
    server.close()
    yield root, proc.stdout, list(attacks), before, after, connections


def test_every_attack_is_contained(hostile):
    root, report, attacks, *_ = hostile
    scores = cell_scores(root)
    for student in attacks:
        assert scores[student]["test_mean"] == 3, f"{student}: the attack was not contained\n{report}"
        assert scores[student]["test_square"] == 2


def test_no_connection_reached_the_host(hostile):
    *_, connections = hostile
    assert connections == []


def test_no_course_file_changed(hostile):
    root, report, attacks, before, after, _ = hostile
    assert before == after
    with open(root / "gradebook.db", "rb") as fh:
        assert b"pwned" not in fh.read()


def test_os_exit_scores_what_ran_and_the_batch_goes_on(hostile):
    root, report, *_ = hostile
    scores = cell_scores(root)
    assert scores["exits"]["test_square"] == 2  # answered before the kernel died
    assert scores["exits"]["test_mean"] == 0 and scores["exits"]["test_total"] == 0
    assert "kernel died in toy.ipynb" in next(l for l in report.splitlines() if l.startswith("exits "))
    assert scores["honest"] == {"test_square": 2, "test_mean": 3, "test_total": 1, "why_mean": None}


def test_a_daemon_does_not_outlive_its_grading(hostile):
    root, *_ = hostile
    assert cell_scores(root)["daemon"]["test_mean"] == 3
    time.sleep(1.0)
    writers = []
    for p in psutil.process_iter(["cwd"]):
        try:
            if p.info["cwd"] and str(root) in p.info["cwd"]:
                writers.append(p.pid)
        except psutil.Error:
            pass
    assert writers == []
    assert not list(root.rglob("still-here.txt")) or all(
        p.stat().st_mtime < time.time() - 0.5 for p in root.rglob("still-here.txt"))


def test_a_fork_bomb_is_capped_reported_and_cleaned_up(hostile):
    from autograder.limits import _v1_pids_parent, _v2_parent

    root, report, *_ = hostile
    if _v1_pids_parent() is None and _v2_parent() is None:
        pytest.skip("no pids cgroup controller here")
    line = next(l for l in report.splitlines() if l.startswith("fork-bomb "))
    assert "process limit hit" in line
    assert cell_scores(root)["fork-bomb"]["test_mean"] == 3  # forks failed; the rest of the cell ran
    sleepers = [p for p in psutil.process_iter(["cwd"]) if (p.info["cwd"] or "").startswith(str(root))]
    assert sleepers == []


def test_a_200_mb_print_leaves_a_small_notebook_with_a_note(hostile):
    root, report, *_ = hostile
    graded = root / "autograded" / "floods-output" / TOY_LAB / TOY_NOTEBOOK
    assert graded.stat().st_size < 3_000_000
    assert "the rest was dropped" in graded.read_text()
    assert cell_scores(root)["floods-output"]["test_mean"] == 3
    line = next(l for l in report.splitlines() if l.startswith("floods-output "))
    assert "output limit hit in toy.ipynb cell mean" in line
