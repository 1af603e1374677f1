"""Grade the same submissions with `nbgrader autograde` and with `autograder grade --workers N`.

Prints both wall times, their ratio, our per-submission overhead beyond
executing the cells (worker time minus the time the kernel spent in cells), and
the same run without the sandbox, for the sandbox's own cost, and with test
cells run in the student's kernel (``--in-kernel-tests``), for the cost of
trusted checks.

    .venv/bin/python bench/grading_throughput.py [--submissions 12] [--workers 2] [--lab toy|day2-fairness]

Targets (issue 3): ratio >= 1.8x on 2 cores; overhead < 0.5 s per submission.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
BIN = Path(sys.executable).parent
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"

import nbformat  # noqa: E402
from nbformat.v4 import new_code_cell  # noqa: E402

from autograder.demo import answer_ids, student_version  # noqa: E402
from course_factory import make_course, toy_source_notebook  # noqa: E402

# a test cell with about half a second of single-threaded work, like a small lab's check
WORK = new_code_cell(
    "import hashlib\nh = b'x'\nfor _ in range(400_000):\n    h = hashlib.sha256(h).digest()\nassert len(h) == 32",
    metadata={"nbgrader": {"grade": True, "solution": False, "locked": True, "grade_id": "work",
                           "schema_version": 3, "task": False, "points": 1}})


def build(root: Path, lab: str, n: int) -> None:
    if lab == "toy":
        make_course(root, toy_source_notebook(extra_cells=[WORK]))
    else:
        shutil.copytree(REPO / "solutions" / lab, root / "solutions" / lab)
        shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
        # nbgrader autograde runs the notebook's own defaults: make them the grading profile
        import tomllib

        profile = tomllib.loads((root / "solutions" / lab / "lab.toml").read_text()).get("profiles", {}).get("grading", {})
        for nb_path in (root / "solutions" / lab).glob("*.ipynb"):
            nb = nbformat.read(nb_path, as_version=4)
            cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
            cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in profile.items())
            nbformat.write(nb, nb_path)
    subprocess.run([str(BIN / "autograder"), "release", lab, "--course-dir", str(root)], check=True,
                   capture_output=True)
    names = [p.name for p in (root / "solutions" / lab).glob("*.ipynb")]
    for i in range(n):
        dest = root / "submitted" / f"s{i:03d}" / lab
        dest.mkdir(parents=True)
        for name in names:
            src = nbformat.read(root / "solutions" / lab / name, as_version=4)
            rel = nbformat.read(root / "labs" / lab / name, as_version=4)
            ids = answer_ids(src)
            solved = set(ids) if i % 3 else set(ids[: len(ids) // 2])  # a mix of full and partial answers
            nbformat.write(student_version(rel, src, solved), dest / name)


def timed(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lab", default="toy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        ours, theirs = Path(tmp) / "ours", Path(tmp) / "nbgrader"
        build(ours, args.lab, args.submissions)
        shutil.copytree(ours, theirs)
        t_nbgrader = timed([str(BIN / "nbgrader"), "autograde", args.lab, "--force"], theirs)
        grade = [str(BIN / "autograder"), "grade", args.lab, "--workers", str(args.workers), "--force", "--no-progress"]
        t_in_kernel = timed(grade + ["--in-kernel-tests"], ours)
        t_plain = timed(grade + ["--no-sandbox"], ours)
        plain = [json.loads(p.read_text()) for p in (ours / ".autograder" / args.lab / "results").glob("*.json")]
        t_ours = timed(grade, ours)
        results = [json.loads(p.read_text()) for p in (ours / ".autograder" / args.lab / "results").glob("*.json")]
        overhead = [r["seconds"]["total"] - r["seconds"]["cells"] for r in results]
        overhead_plain = [r["seconds"]["total"] - r["seconds"]["cells"] for r in plain]
        cells = [r["seconds"]["cells"] for r in results]
    n = args.submissions
    print(f"lab {args.lab}: {n} submissions, {os.cpu_count()} cores")
    print(f"nbgrader autograde (serial)        {t_nbgrader:7.2f} s   {t_nbgrader / n:5.2f} s/submission")
    print(f"autograder grade --workers {args.workers}       {t_ours:7.2f} s   {t_ours / n:5.2f} s/submission")
    print(f"speed-up                            {t_nbgrader / t_ours:7.2f} x   (target >= 1.8x)")
    print(f"cells executing, median             {statistics.median(cells):7.2f} s/submission")
    print(f"worker overhead beyond cells        median {statistics.median(overhead):.2f} s, "
          f"max {max(overhead):.2f} s per submission (target < 0.5 s)")
    print(f"same without the sandbox            {t_plain:7.2f} s in all; overhead median "
          f"{statistics.median(overhead_plain):.2f} s -> sandbox costs "
          f"{(t_ours - t_plain) / n:+.2f} s per submission")
    print(f"same with tests in the kernel       {t_in_kernel:7.2f} s in all -> trusted checks cost "
          f"{(t_ours - t_in_kernel) / n:+.2f} s per submission ({t_ours / t_in_kernel:.2f}x)")


if __name__ == "__main__":
    main()
