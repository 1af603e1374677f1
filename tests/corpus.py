"""The adversarial corpus: hostile answers to the toy lab, each with the scores that mean "contained".

Most attacks define ``mean`` correctly only if the attack *failed*, so the gradebook itself says
whether the sandbox held.  Used by ``test_hostile.py`` and ``bench/adversarial_corpus.py``.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from course_factory import TOY_LAB, TOY_NOTEBOOK, fill_answers, submit

ALL_ANSWERS = {"square", "mean", "total", "why_mean"}
FULL = {"test_square": 2, "test_mean": 3, "test_total": 1, "why_mean": None}
#: flags the corpus is graded with
GRADE_FLAGS = ["--timeout", "60", "--cell-timeout", "10", "--memory-limit", "1G", "--disk-limit", "64M"]

MEAN_IF_CONTAINED = """
def mean(xs):
    if attack_worked:
        raise RuntimeError("the attack worked")
    return sum(xs) / len(xs)
"""
MEAN = "\ndef mean(xs):\n    return sum(xs) / len(xs)"


def _indent(code: str) -> str:
    return "\n".join("    " + line for line in code.strip().splitlines())


def attack(code: str) -> str:
    """``code`` sets ``attack_worked = True`` if it got through; ``mean`` is right only if it did not."""
    return f"attack_worked = False\ntry:\n{_indent(code)}\nexcept Exception:\n    attack_worked = False\n" + \
        MEAN_IF_CONTAINED


def contained_attacks(root: Path, port: int) -> dict[str, str]:
    """Attacks on the host: each must fail (``mean`` then scores) -- student -> answer for ``mean``."""
    secret = root / "solutions" / TOY_LAB / TOY_NOTEBOOK
    # every directory but the kernel's own and the read-only system and Python trees
    walk = ("import sys\n"
            "skip = {'/proc', '/sys', '/dev', '/usr', sys.prefix, sys.base_prefix}\n"
            "for d, dirs, fs in os.walk('/'):\n"
            "    dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]\n")
    attacks = {
        "network": f"socket_mod = __import__('socket')\n"
                   f"socket_mod.create_connection(('127.0.0.1', {port}), timeout=2)\nattack_worked = True",
        "reads-solutions": f"open({str(secret)!r}).read()\nattack_worked = True",
        "reads-classmates": f"open({str(root / 'submitted' / 'honest' / TOY_LAB / TOY_NOTEBOOK)!r}).read()\n"
                            "attack_worked = True",
        # look in every file outside the system trees for this lab's hidden test
        "searches-disk": "import os\nfound = []\n" + walk +
                         "    for f in fs:\n"
                         "        try:\n"
                         "            if 'square(-4) == 16' in open(os.path.join(d, f), errors='ignore').read(1 << 20):\n"
                         "                found.append(os.path.join(d, f))\n"
                         "        except OSError:\n"
                         "            pass\n"
                         "attack_worked = bool(found)",
        # append to every file it can find outside its own directory, the gradebook above all
        "writes-everything": "import os\nhere = os.getcwd()\n" + walk +
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
        "fills-disk": "open('fill.bin', 'wb').write(b'x' * (100 * 2**20))\nattack_worked = True",
    }
    return {student: attack(code) for student, code in attacks.items()}


def limit_attacks() -> dict[str, tuple[str, list[dict]]]:
    """Attacks on the grader's resources -- student -> (answer for ``mean``, the scores when contained:
    where two limits race, which one stops it first depends on the machine)."""
    from autograder.limits import memory_cgroup_support

    cgroup = memory_cgroup_support()[0] is not None
    daemon = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        while True:\n"
              "            open('still-here.txt', 'a').write('x')\n"
              "            time.sleep(0.1)\n"
              "    os._exit(0)" + MEAN)
    bomb = ("import os, time\nforked = 0\n"
            "try:\n"
            "    for _ in range(100_000):\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(120)\n"
            "            os._exit(0)\n"
            "        forked += 1\n"
            "except OSError:\n"
            "    pass" + MEAN)
    no_mean = {"test_square": 2, "test_mean": 0, "test_total": 1, "why_mean": None}
    dead = {"test_square": 2, "test_mean": 0, "test_total": 0, "why_mean": None}  # the kernel died here
    return {
        "daemon": (daemon, [FULL]),
        # the task limit stops the forks and the cell goes on -- or a thousand processes
        # pass the memory limit first and the kernel's group is OOM-killed
        "fork-bomb": (bomb, [FULL, dead]),
        "floods-output": ("print('x' * 200_000_000)" + MEAN, [FULL]),
        "exits": ("import os\nos._exit(3)", [dead]),
        "infinite-loop": ("while True:\n    pass" + MEAN, [no_mean]),
        # the kernel's cgroup is OOM-killed; without cgroups, RLIMIT_DATA makes it a MemoryError
        "memory-bomb": ("blob = bytearray(3 * 2**30)\nblob[::4096] = b'x' * len(range(0, len(blob), 4096))" + MEAN,
                        [dead if cgroup else no_mean]),
    }


def submit_corpus(root: Path, rel, src, port: int) -> dict[str, list[dict]]:
    """Submit every attack (and one honest student); return student -> the scores that mean "contained"."""
    expected = {}
    for student, answer in contained_attacks(root, port).items():
        submit(root, student, fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": answer}))
        expected[student] = [FULL]
    for student, (answer, scores) in limit_attacks().items():
        submit(root, student, fill_answers(rel, src, solved=ALL_ANSWERS - {"mean"}, answers={"mean": answer}))
        expected[student] = scores
    submit(root, "honest", fill_answers(rel, src, solved=ALL_ANSWERS))
    return expected


@contextlib.contextmanager
def host_listener():
    """A TCP server on the host's loopback: ``(port, connections)``; the network attack aims at it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    connections: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], connections
    finally:
        stop.set()
        server.close()
