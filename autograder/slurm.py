"""The Slurm backend: one job array per grading run, one array task per submission.

Each task runs the same worker as the local pool (``python -m autograder.worker
--array DIR``), inside the same sandbox, and writes its result file
atomically into the course's results area; the coordinator polls the queue,
collects the result files and stays the only writer of the gradebook.

A task that ends without a result (it failed, was cancelled, preempted, or
its node died) is submitted once more in a second array; if it fails again it
is reported as an error, and the batch goes on.  Jobs of a coordinator that was
killed are cancelled by the next run before it submits anything (what they had
finished is recorded, not graded again).

Only the standard client commands are used (``sbatch``, ``squeue``,
``scontrol``, ``scancel``), so it works on any Slurm cluster without
accounting (``sacct``) and without Python bindings.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .course import CourseError
from .worker import GradingJob, GradingResult, atomic_write

ACTIVE = "slurm-jobs.json"   # in the lab's state directory: job ids a run submitted and has not seen end


@dataclass
class SlurmOptions:
    partition: str | None = None
    gres: str | None = None           # e.g. "gpu:1" for labs graded on a GPU node
    time: str | None = None           # per task, Slurm's format ("30", "1:00:00"); default: from the lab's timeout
    cpus_per_task: int = 2            # a lab's grading profile trains with 2 processes
    max_concurrent: int | None = None  # the array's "%N" throttle (default: no limit)
    account: str | None = None
    extra: list[str] = field(default_factory=list)  # more sbatch arguments, as given
    poll_seconds: float = 2.0
    attempts: int = 2                 # a task is retried once, then reported


def slurm_available() -> tuple[bool, str]:
    """Can this machine submit jobs? (the commands exist and the controller answers)"""
    missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(c) is None]
    if missing:
        return False, f"the Slurm commands {', '.join(missing)} are not on PATH"
    proc = subprocess.run(["squeue", "-h", "-o", "%i", "-u", "nobody"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return False, f"the Slurm controller does not answer: {proc.stderr.strip() or proc.stdout.strip()}"
    return True, ""


def time_limit(seconds: float) -> str:
    """A task's time limit in Slurm's minutes format, with room for kernel start-up and scoring."""
    minutes = int(-(-(seconds * 1.25 + 120) // 60))
    return str(max(minutes, 2))


def batch_script(lab: str, run_dir: Path, options: SlurmOptions, *, tasks: str, task_seconds: float,
                 python: str | None = None) -> str:
    """The sbatch script of one array: ``tasks`` is Slurm's index list (``0-9`` or ``3,7``)."""
    throttle = f"%{options.max_concurrent}" if options.max_concurrent else ""
    directives = [
        f"--job-name=autograde-{lab}",
        f"--array={tasks}{throttle}",
        f"--output={run_dir / 'logs' / '%A_%a.out'}",
        f"--cpus-per-task={options.cpus_per_task}",
        f"--time={options.time or time_limit(task_seconds)}",
        "--no-requeue",        # a preempted task ends; the coordinator decides whether it runs again
        "--kill-on-invalid-dep=yes",
    ]
    if options.partition:
        directives.append(f"--partition={options.partition}")
    if options.gres:
        directives.append(f"--gres={options.gres}")
    if options.account:
        directives.append(f"--account={options.account}")
    directives += options.extra
    python = python or sys.executable
    lines = ["#!/bin/bash", f"# autograder: grade {lab}, one array task per submission"]
    lines += [f"#SBATCH {d}" for d in directives]
    lines += [
        "set -euo pipefail",
        # the tasks find the course and the Python environment where the coordinator did
        f"cd {shlex.quote(str(run_dir))}",
        f"exec {shlex.quote(python)} -m autograder.worker --array {shlex.quote(str(run_dir / 'jobs'))}",
        "",
    ]
    return "\n".join(lines)


class SlurmBackend:
    """Grades jobs as Slurm array tasks; yields ``(job, result)`` as results appear."""

    def __init__(self, state: Path, lab: str, options: SlurmOptions, progress: bool = True):
        self.state = state
        self.lab = lab
        self.options = options
        self.progress = progress

    # -- bookkeeping of submitted arrays (so a killed coordinator's jobs can be cancelled) --
    def _active(self) -> list[str]:
        try:
            return list(json.loads((self.state / ACTIVE).read_text()))
        except (OSError, ValueError):
            return []

    def _set_active(self, ids: list[str]) -> None:
        atomic_write(self.state / ACTIVE, json.dumps(ids))

    def cancel_leftovers(self) -> list[str]:
        """Cancel the arrays a killed run left queued or running (their finished results stay)."""
        ids = self._active()
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=60)
            self._wait_gone(ids)
            self._set_active([])
        return ids

    def _wait_gone(self, ids: list[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._queue(ids):
            time.sleep(0.5)

    # -- Slurm commands --
    def _submit(self, run_dir: Path, indices: list[int], task_seconds: float) -> str:
        tasks = _index_list(indices)
        script = batch_script(self.lab, run_dir, self.options, tasks=tasks, task_seconds=task_seconds)
        path = run_dir / f"grade-{len(list(run_dir.glob('grade-*.sbatch')))}.sbatch"
        atomic_write(path, script)
        proc = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, timeout=120,
                              cwd=run_dir)
        if proc.returncode != 0:
            raise CourseError(f"sbatch refused the grading job ({path}): "
                              f"{(proc.stderr or proc.stdout).strip() or f'exit {proc.returncode}'}")
        job_id = proc.stdout.strip().split(";")[0]
        self._set_active(self._active() + [job_id])
        return job_id

    def _queue(self, ids: list[str]) -> dict[str, str]:
        """``{"JOBID_INDEX": STATE}`` of the array tasks still known to the queue."""
        if not ids:
            return {}
        proc = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:   # all of them ended and were purged
                return {}
            raise CourseError(f"squeue failed: {proc.stderr.strip()}")
        states = {}
        for line in proc.stdout.splitlines():
            task, _, state = line.strip().partition(" ")
            states[task] = state
        return states

    def _why(self, job_id: str, index: int, run_dir: Path) -> str:
        """Slurm's account of a task that ended without a result, and the end of its log."""
        proc = subprocess.run(["scontrol", "-o", "show", "job", f"{job_id}_{index}"],
                              capture_output=True, text=True, timeout=60)
        fields = dict(part.split("=", 1) for part in proc.stdout.split() if "=" in part)
        state = fields.get("JobState", "ended")
        why = f"Slurm task {job_id}_{index} {state}"
        if fields.get("ExitCode", "0:0") != "0:0":
            why += f" (exit {fields['ExitCode']})"
        log = run_dir / "logs" / f"{job_id}_{index}.out"
        try:
            tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
        except OSError:
            tail = []
        if tail:
            why += f": {tail[0][:200]}"
        return why + f"; log {log}"

    # -- the run --
    def run(self, jobs: list[GradingJob], task_seconds: float) -> Iterator[tuple[GradingJob, GradingResult]]:
        from tqdm.auto import tqdm

        if not jobs:
            return
        run_dir = self.state / "slurm" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        (run_dir / "jobs").mkdir(parents=True)
        (run_dir / "logs").mkdir()
        for i, job in enumerate(jobs):
            Path(job.result_path).unlink(missing_ok=True)   # a stale or failed result must not count
            atomic_write(run_dir / "jobs" / f"{i}.json", job.to_json())
        attempts = {i: 1 for i in range(len(jobs))}
        owner: dict[int, str] = {}                # task index -> the array (job id) it runs in now
        job_id = self._submit(run_dir, list(range(len(jobs))), task_seconds)
        owner.update({i: job_id for i in range(len(jobs))})
        waiting = set(range(len(jobs)))
        bar = tqdm(total=len(jobs), desc=f"grading {self.lab} on Slurm", unit="submission",
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        try:
            while waiting:
                ids = sorted(set(owner[i] for i in waiting))
                queue = self._queue(ids)    # first the queue, then the files: a task that left the
                retry: list[int] = []       # queue wrote its result before it ended
                for i in sorted(waiting):
                    job = jobs[i]
                    result = _load(Path(job.result_path), job.digest)
                    if result is not None:
                        waiting.discard(i)
                        bar.update(1)
                        yield job, result
                        continue
                    if f"{owner[i]}_{i}" in queue:
                        continue
                    why = self._why(owner[i], i, run_dir)
                    if attempts[i] < self.options.attempts:
                        attempts[i] += 1
                        retry.append(i)
                        print(f"autograder: {job.student}: {why}; submitting it again", file=sys.stderr)
                    else:
                        waiting.discard(i)
                        bar.update(1)
                        yield job, GradingResult(
                            student=job.student, lab=job.lab, digest=job.digest, status="error", retry=True,
                            message=f"grading failed on Slurm {self.options.attempts} times: {why}")
                if retry:
                    again = self._submit(run_dir, retry, task_seconds)
                    owner.update({i: again for i in retry})
                running = sum(1 for state in queue.values() if state == "RUNNING")
                bar.set_postfix_str(f"{running} running, {len(queue) - running} queued", refresh=True)
                if waiting:
                    time.sleep(self.options.poll_seconds)
        finally:
            bar.close()
            left = sorted(set(owner[i] for i in waiting)) if waiting else []
            if left:    # interrupted: do not leave tasks grading for nobody
                subprocess.run(["scancel", *left], capture_output=True, text=True, timeout=60)
            self._set_active([])


def _load(path: Path, digest: str) -> GradingResult | None:
    try:
        result = GradingResult.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    return result if result.digest == digest else None


def _index_list(indices: Iterable[int]) -> str:
    """Slurm's compact array index list: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    out, run = [], []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
