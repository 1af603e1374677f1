"""Grade the adversarial corpus (tests/corpus.py) and count the attacks that were contained.

An attack is contained when its submission scores exactly what the source's tests give an answer
whose attack failed (see tests/corpus.py), the course files are unchanged, no connection reached
the host and no process of any sandbox is left.

    .venv/bin/python bench/adversarial_corpus.py [--workers 2]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

from conftest import run_cli  # noqa: E402
from corpus import GRADE_FLAGS, host_listener, submit_corpus  # noqa: E402
from course_factory import TOY_LAB, released_course  # noqa: E402
from test_grading import cell_scores  # noqa: E402
from test_hostile import foreign_pid_namespaces  # noqa: E402


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and not rel.startswith((".autograder", "autograded", "gradebook.db")):
            h.update(rel.encode() + path.read_bytes())
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root, rel, src = released_course(Path(tempfile.mkdtemp(prefix="corpus-")))
    with host_listener() as (port, connections):
        expected = submit_corpus(root, rel, src, port)
        before, sandboxes = digest(root), foreign_pid_namespaces()
        started = time.perf_counter()
        proc = run_cli("grade", TOY_LAB, "--course-dir", str(root), "--workers", str(args.workers),
                       "--no-progress", *GRADE_FLAGS, timeout=900)
        seconds = time.perf_counter() - started
    left = foreign_pid_namespaces() - sandboxes
    unchanged = digest(root) == before
    scores = cell_scores(root)
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    contained = 0
    print(f"{'attack':<18} {'contained':<10} report")
    for student, allowed in expected.items():
        ok = scores[student] in allowed
        contained += ok
        status = lines.get(student, "").split("  ")[-1].strip()
        print(f"{student:<18} {'yes' if ok else 'NO':<10} {status}")
    print(f"\ncontained {contained}/{len(expected)} attacks in {seconds:.1f} s with {args.workers} workers; "
          f"honest submission {'full marks' if scores['honest']['test_mean'] == 3 else 'WRONG'}; "
          f"course files {'unchanged' if unchanged else 'CHANGED'}; "
          f"connections to the host {len(connections)}; sandbox processes left {len(left)}")
    return 0 if contained == len(expected) and unchanged and not connections and not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
