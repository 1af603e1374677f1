"""The ``autograder`` command.

    autograder release LAB [--course-dir D] [--exchange]
    autograder watch [--course-dir D] [--workers N] [--once]
    autograder serve [--course-dir D] [--host 127.0.0.1] [--port P] [--workers N]
    autograder attempts [LAB] [--student ID] [--waiting] [--course-dir D]
    autograder tokens add|list|revoke [NAME ...] [--instructor] [--course-dir D]
    autograder grade LAB [--course-dir D] [--student ID ...] [--workers N]
                         [--cell-timeout SEC] [--timeout SEC] [--memory-limit SIZE] [--disk-limit SIZE]
                         [--force] [--backend local|slurm] [--partition P] [--gres G] [--time T]
                         [--array-limit N] [--cpus-per-task N] [--sbatch-arg ARG ...]
    autograder feedback LAB [--course-dir D] [--student ID]
    autograder export [--course-dir D] [--format csv] -o FILE
    autograder book [--output DIR] [--serial] [--no-strict]
    autograder demo [--course-dir D] [--no-book]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .course import Course, CourseError
from .errors import AutograderError


def _course(args) -> Course:
    return Course(args.course_dir, db_url=getattr(args, "db", None))


def cmd_release(args) -> int:
    from .release import release_lab

    course = _course(args)
    for path in release_lab(course, args.lab):
        print(f"released {path}")
    if args.exchange:
        from .release import publish_lab

        print(f"published to nbgrader's exchange: {publish_lab(course, args.lab)} "
              f"(students: nbgrader fetch_assignment {args.lab})")
    return 0


def cmd_watch(args) -> int:
    import signal
    import threading

    from .intake import GradingLoop

    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # the second time: now (what is being graded is graded again on restart)
            raise KeyboardInterrupt
        stop.set()
        print("autograder watch: stopping after the submissions being graded; signal again to stop now",
              file=sys.stderr, flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    loop = GradingLoop(_course(args), workers=args.workers, poll=args.poll, exchange=not args.no_exchange,
                       submitted=not args.no_submitted, sandbox=not args.no_sandbox)
    loop.run(stop, until_idle=args.once)
    return 0


def cmd_grade(args) -> int:
    from .coordinator import GradeOptions, format_table, grade_lab

    options = GradeOptions(
        students=args.student or None,
        workers=args.workers,
        cell_timeout=args.cell_timeout,
        timeout=args.timeout,
        memory_limit=args.memory_limit,
        disk_limit=args.disk_limit,
        force=args.force,
        progress=not args.no_progress,
        sandbox=not args.no_sandbox,
        trusted_checks=not args.in_kernel_tests,
        backend=args.backend,
    )
    if args.backend == "slurm":
        from .slurm import SlurmOptions

        options.slurm = SlurmOptions(partition=args.partition, gres=args.gres, time=args.time,
                                     cpus_per_task=args.cpus_per_task, account=args.account,
                                     max_concurrent=args.array_limit or args.workers,
                                     extra=list(args.sbatch_arg or []))
    elif any(v is not None for v in (args.partition, args.gres, args.time, args.array_limit, args.account,
                                     args.sbatch_arg)):
        raise ValueError("--partition, --gres, --time, --account, --array-limit and --sbatch-arg "
                         "need --backend slurm")
    rows = grade_lab(_course(args), args.lab, options)
    if not rows:
        print(f"no submissions for {args.lab} in {_course(args).submitted}")
        return 0
    print(format_table(rows))
    errors = sum(r.status == "error" for r in rows)
    print(f"\n{len(rows)} submission(s): {len(rows) - errors} graded, {errors} with errors")
    return 0


def cmd_attempts(args) -> int:
    from tabulate import tabulate

    from .attempts import AttemptStore

    store = AttemptStore(_course(args))
    attempts = store.waiting() if args.waiting else store.all(lab=args.lab, student=args.student)
    rows = [[a.id, a.student, a.lab, a.source, a.status,
             "" if a.score is None else f"{a.score:g}/{a.max_score - a.manual_pending:g}",
             "" if a.latency is None else f"{a.latency:.1f}", a.message[:80]] for a in attempts]
    print(tabulate(rows, headers=["attempt", "student", "lab", "from", "status", "score", "latency s", "message"],
                   tablefmt="simple") if rows else "no attempts")
    return 0


def cmd_tokens(args) -> int:
    from .tokens import TokenStore

    tokens = TokenStore(_course(args))
    if args.action == "add":
        if not args.names:
            raise ValueError("name the students (or instructors) to issue tokens for")
        role = "instructor" if args.instructor else "student"
        print("# each token is shown only this once; the course keeps only its hash")
        for name in args.names:
            print(f"{name},{tokens.add(name, role)}")
    elif args.action == "revoke":
        for name in args.names:
            print(f"{name}: {'revoked' if tokens.revoke(name) else 'had no token'}")
    else:
        for name, entry in tokens.list().items():
            print(f"{name}\t{entry['role']}\t{entry['created']}")
    return 0


def cmd_serve(args) -> int:
    import subprocess

    import uvicorn

    from .course import parse_size
    from .serve import ServeSettings, create_app

    course = _course(args)
    settings = ServeSettings(max_upload_bytes=parse_size(args.max_upload), uploads_per_window=args.rate,
                             window_seconds=int(args.rate_window), secure_cookies=args.secure_cookies)
    app = create_app(course, settings)
    grader = None
    if not args.no_grader:
        command = [sys.executable, "-m", "autograder", "watch", "--course-dir", str(course.root)]
        if args.db:
            command += ["--db", args.db]
        if args.workers:
            command += ["--workers", str(args.workers)]
        if args.no_sandbox:
            command += ["--no-sandbox"]
        grader = subprocess.Popen(command, preexec_fn=_die_with_parent)
        print(f"grading loop started (pid {grader.pid}): `autograder watch` on {course.root}", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    finally:
        if grader is not None:
            grader.terminate()
            try:
                grader.wait(timeout=30)
            except subprocess.TimeoutExpired:
                grader.kill()
    return 0


def _die_with_parent() -> None:
    """In a child: SIGTERM when the parent dies, however it dies (Linux's PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the parent's `finally` stops it on a normal exit


def cmd_feedback(args) -> int:
    from .feedback import generate_feedback

    for path in generate_feedback(_course(args), args.lab, args.student):
        print(f"feedback {path}")
    return 0


def cmd_export(args) -> int:
    from .export import export_grades

    path = export_grades(_course(args), Path(args.output), args.format)
    print(f"grades written to {path}")
    return 0


def cmd_book(args) -> int:
    from .book import build_book
    from .course import find_project_root

    project = find_project_root()
    if project is None:
        print("autograder book: run it inside the course repository", file=sys.stderr)
        return 2
    result = build_book(project, Path(args.output) if args.output else None, strict=not args.no_strict,
                        parallel=not args.serial)
    if result.returncode != 0:
        print(f"autograder book: the build failed (exit {result.returncode}); see above", file=sys.stderr)
        return result.returncode
    print(f"book built in {result.seconds:.1f} s ({result.pages_executed} pages executed in "
          f"{result.execute_seconds:.1f} s): {result.html / 'index.html'}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.course_dir, with_book=not args.no_book, workers=args.workers)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autograder", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def course_dir(p):
        p.add_argument("--course-dir", type=Path, default=None,
                       help="course directory for instructor state (default: this repository)")
        p.add_argument("--db", default=None, metavar="URL",
                       help="the gradebook, any SQLAlchemy URL, e.g. postgresql://user@host/course "
                            "(default: $AUTOGRADER_DB_URL, else nbgrader_config.py's CourseDirectory.db_url, "
                            "else gradebook.db in the course directory)")

    p = sub.add_parser("release", help="generate the student version of solutions/LAB into labs/LAB")
    p.add_argument("lab")
    course_dir(p)
    p.add_argument("--exchange", action="store_true",
                   help="also publish it to nbgrader's exchange (nbgrader release_assignment), for "
                        "`nbgrader fetch_assignment` and the Assignment List on a JupyterHub")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("watch", help="grade each submission as it arrives (nbgrader's exchange, submitted/, "
                                     "uploads to `autograder serve`), with feedback for nbgrader fetch_feedback")
    course_dir(p)
    p.add_argument("--workers", type=_positive_int, default=None,
                   help=f"submissions graded at once (default: number of cores, {os.cpu_count()})")
    p.add_argument("--poll", type=_seconds, default=0.5, metavar="SEC",
                   help="how often to look for new submissions (default 0.5 s)")
    p.add_argument("--once", action="store_true", help="grade what is waiting, then stop")
    p.add_argument("--no-exchange", action="store_true", help="do not read nbgrader's exchange inbound")
    p.add_argument("--no-submitted", action="store_true", help="do not grade changes in submitted/")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run student code without bubblewrap (it then has your rights, files and network)")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("grade", help="grade every submission in submitted/*/LAB")
    p.add_argument("lab")
    course_dir(p)
    p.add_argument("--student", action="append", metavar="ID", nargs="+", help="grade only these students")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help=f"submissions graded at once (default: number of cores, {os.cpu_count()})")
    p.add_argument("--cell-timeout", type=_seconds, default=None, metavar="SEC",
                   help="interrupt a cell after SEC seconds (default: the lab's)")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="SEC",
                   help="kill a notebook's kernel after SEC seconds (default: the lab's)")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="memory for a kernel and its children, e.g. 4G (default: the lab's)")
    p.add_argument("--disk-limit", default=None, metavar="SIZE",
                   help="what a kernel may write in its working directory and /tmp, e.g. 1G "
                        "(default: the lab's, else 1G)")
    p.add_argument("--force", action="store_true", help="regrade submissions that did not change")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--in-kernel-tests", action="store_true",
                   help="run test cells in the student's kernel, as nbgrader does, instead of checking "
                        "exported answers outside it (weaker: for comparison)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run student code without bubblewrap (it then has your rights, files and network)")
    slurm = p.add_argument_group("grading on a Slurm cluster (--backend slurm)")
    slurm.add_argument("--backend", choices=["local", "slurm"], default="local",
                       help="local: a pool of worker processes on this machine (default); slurm: one job "
                            "array, a task per submission, submitted with sbatch")
    slurm.add_argument("--partition", default=None, metavar="P", help="sbatch --partition")
    slurm.add_argument("--gres", default=None, metavar="G", help="sbatch --gres, e.g. gpu:1")
    slurm.add_argument("--time", default=None, metavar="T",
                       help="sbatch --time per task (default: from the lab's notebook timeout)")
    slurm.add_argument("--account", default=None, metavar="A", help="sbatch --account")
    slurm.add_argument("--cpus-per-task", type=_positive_int, default=2, metavar="N",
                       help="sbatch --cpus-per-task (default 2: the grading profiles train with 2 processes)")
    slurm.add_argument("--array-limit", type=_positive_int, default=None, metavar="N",
                       help="tasks running at once (the array's %%N; default: --workers, else no limit)")
    slurm.add_argument("--sbatch-arg", action="append", default=None, metavar="ARG",
                       help="one more sbatch argument, e.g. --sbatch-arg=--qos=short (repeatable)")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("attempts", help="what students handed in to `watch` / `serve`, and what became of it")
    p.add_argument("lab", nargs="?", default=None)
    course_dir(p)
    p.add_argument("--student", default=None, metavar="ID")
    p.add_argument("--waiting", action="store_true", help="only those still waiting to be graded")
    p.set_defaults(func=cmd_attempts)

    p = sub.add_parser("tokens", help="course tokens for `autograder serve` (stored hashed)")
    p.add_argument("action", choices=["add", "list", "revoke"])
    p.add_argument("names", nargs="*", metavar="NAME", help="student ids (or instructor names with --instructor)")
    course_dir(p)
    p.add_argument("--instructor", action="store_true", help="tokens that open the instructors' score table")
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser("serve", help="the submission service without a JupyterHub: students upload a lab and "
                                     "see its score and feedback; starts the grading loop too")
    course_dir(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=_positive_int, default=None, help="submissions graded at once")
    p.add_argument("--max-upload", default="8M", metavar="SIZE", help="largest notebook accepted (default 8M)")
    p.add_argument("--rate", type=_positive_int, default=10, metavar="N",
                   help="uploads per student per --rate-window (default 10)")
    p.add_argument("--rate-window", type=_seconds, default=600, metavar="SEC", help="default 600 s")
    p.add_argument("--secure-cookies", action="store_true", help="behind HTTPS: cookies only over HTTPS")
    p.add_argument("--no-grader", action="store_true",
                   help="do not start the grading loop (an `autograder watch` runs separately)")
    p.add_argument("--no-sandbox", action="store_true", help="grade without bubblewrap (see grade --no-sandbox)")
    p.add_argument("--quiet", action="store_true", help="log warnings only, not every request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("feedback", help="HTML feedback per student under feedback/")
    p.add_argument("lab")
    course_dir(p)
    p.add_argument("--student", default=None, metavar="ID")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("export", help="export grades (one row per student and lab)")
    course_dir(p)
    p.add_argument("--format", default="csv", choices=["csv"])
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("book", help="build the web book offline (pages executed in parallel, then jupyter-book)")
    p.add_argument("--output", metavar="DIR", help="build into DIR/_build (default: the repository)")
    p.add_argument("--serial", action="store_true", help="let jupyter-book execute the pages one by one")
    p.add_argument("--no-strict", action="store_true", help="do not treat Sphinx warnings as errors")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("demo", help="build the book, release the labs, grade a demo set, print the grades")
    course_dir(p)
    p.add_argument("--no-book", action="store_true", help="skip building the book")
    p.add_argument("--workers", type=_positive_int, default=None)
    p.set_defaults(func=cmd_demo)
    return parser


def _ensure_venv_on_path() -> None:
    # nbgrader's Gradebook runs the `alembic` console script: make sure the
    # environment this command runs from is on PATH even when invoked by full path
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _skip_slow_optional_imports() -> None:
    # jsonschema (imported by nbformat) loads rfc3987_syntax when it is installed,
    # which compiles a grammar for 1.6 s to check an "iri" string format that
    # notebooks never use; a None entry makes its optional import fail fast.
    sys.modules.setdefault("rfc3987_syntax", None)


def main(argv: list[str] | None = None) -> int:
    _skip_slow_optional_imports()
    args = build_parser().parse_args(argv)
    if getattr(args, "student", None) and isinstance(args.student[0], list):
        args.student = [s for group in args.student for s in group]
    _ensure_venv_on_path()
    try:
        return args.func(args)
    except (CourseError, AutograderError, ValueError) as exc:
        print(f"autograder: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autograder: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
