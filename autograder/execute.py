"""Step 3 -- execute: run the assembled notebook with papermill.

Execution stays one ``papermill.execute_notebook(...)`` call.  What grading
needs beyond papermill's default engine lives in :class:`AutograderEngine`,
registered under the name ``autograder`` through papermill's
``papermill.engine`` entry point:

* every cell runs even when an earlier one fails (``allow_errors``), so later
  test cells still score;
* a cell that runs past ``execution_timeout`` is interrupted and recorded as an
  error on that cell; the following cells still run;
* past ``notebook_timeout`` the kernel is killed; the cells that ran keep
  their outputs and the rest are marked as not run;
* what happened is written to ``nb.metadata.autograder.execution`` so the
  scoring step and the report can say which limit was hit, and where.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine

NOT_RUN = "not-run"


def _execution_record(nb: NotebookNode) -> dict[str, Any]:
    meta = nb.metadata.setdefault("autograder", {})
    return meta.setdefault("execution", {"events": [], "cells_seconds": 0.0})


class GradingNotebookClient(PapermillNotebookClient):
    """Papermill's client, made to go on after errors, cell timeouts and a dead kernel."""

    #: bytes of output one cell may leave in the graded notebook; the rest is dropped with a note
    output_limit = 1_000_000

    def output(self, outs, msg, display_id, cell_index):
        """nbclient's output handler, with a per-cell cap: a 200 MB print leaves a small notebook."""
        content = msg.get("content", {})
        if msg.get("msg_type") == "error":  # errors decide scores: always kept, tracebacks trimmed
            content["traceback"] = [line[:2000] for line in content.get("traceback", [])[-30:]]
            return super().output(outs, msg, display_id, cell_index)
        size = _content_size(content)
        used = self._output_used.get(cell_index, 0)
        self._output_used[cell_index] = used + size
        if used + size <= self.output_limit:
            return super().output(outs, msg, display_id, cell_index)
        if used <= self.output_limit:  # the first output past the cap: leave a note, once
            outs.append(nbformat.v4.new_output(
                "stream", name="stdout",
                text=f"\n[autograder: this cell's output passed {self.output_limit // 1000} kB; the rest was dropped]\n"))
            record = _execution_record(self.nb)
            cell = self.nb.cells[cell_index]
            record["events"].append({"kind": "output-limit", "cell": cell_index, "grade_id": _gid(cell)})
        return None

    def __init__(self, nb_man, notebook_timeout: float | None = None, trusted_checks: bool = False,
                 check_dir: str | None = None, **kw):
        kw.setdefault("allow_errors", True)
        kw.setdefault("interrupt_on_timeout", True)
        # a kernel that ignores the interrupt must not stall the whole run
        kw.setdefault("raise_on_iopub_timeout", False)
        # each kernel runs one submission: no graceful shutdown to wait for
        kw.setdefault("shutdown_kernel", "immediate")
        super().__init__(nb_man, **kw)
        self.notebook_timeout = notebook_timeout
        self._deadline_hit = threading.Event()
        self._timed_out_cell: int | None = None
        self._current_index: int | None = None
        self._output_used: dict[int, int] = {}
        self.trusted_checks = trusted_checks
        self.check_dir = check_dir  # where a check runs: the lab's source directory (hidden/ is there)
        self._trusted_context = None

    # nbclient calls this when a cell passes `timeout`
    async def _async_handle_timeout(self, timeout, cell=None):
        self._timed_out_cell = self._current_index
        return await super()._async_handle_timeout(timeout, cell)

    def _kill_kernel(self) -> None:
        """Called from a timer thread when the notebook deadline passes."""
        self._deadline_hit.set()
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        pid = getattr(process, "pid", None)
        if pid is None:
            return
        try:  # the kernel was started in its own session: take its children too
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def papermill_execute_cells(self):
        record = _execution_record(self.nb)
        events = record["events"]
        timer = None
        if self.notebook_timeout:
            timer = threading.Timer(self.notebook_timeout, self._kill_kernel)
            timer.daemon = True
            timer.start()
        started = time.monotonic()
        try:
            for index, cell in enumerate(self.nb.cells):
                if self._deadline_hit.is_set():
                    self._mark_not_run(index, "the notebook time limit had passed")
                    continue
                self._current_index = index
                self._timed_out_cell = None
                try:
                    self.nb_man.cell_start(cell, index)
                    if self.trusted_checks and _is_test(cell):
                        self._check_outside_kernel(cell, index)
                    else:
                        self.execute_cell(cell, index)
                except DeadKernelError:
                    cause = ("notebook-timeout" if self._deadline_hit.is_set() else "kernel-died")
                    events.append({"kind": cause, "cell": index, "grade_id": _gid(cell)})
                    _add_error(cell, "KernelDied" if cause == "kernel-died" else "NotebookTimeout",
                               "the kernel was killed: notebook time limit reached"
                               if cause == "notebook-timeout" else
                               "the kernel died while running this cell (crash, os._exit or memory limit)")
                    self._deadline_hit.set()  # nothing more can run in a dead kernel
                except Exception as exc:  # noqa: BLE001
                    # nbclient or jupyter_client choked on what the kernel sent (a student can
                    # patch json or the session in the kernel): the kernel is beyond use
                    events.append({"kind": "kernel-broken", "cell": index, "grade_id": _gid(cell)})
                    _add_error(cell, "KernelBroken", f"the kernel stopped speaking the Jupyter protocol "
                                                     f"({type(exc).__name__}: {str(exc)[:200]}); it was stopped")
                    self._kill_kernel()
                finally:
                    if self._timed_out_cell == index:
                        events.append({"kind": "cell-timeout", "cell": index, "grade_id": _gid(cell)})
                        if not any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                            _add_error(cell, "CellTimeout", f"cell interrupted after {self.timeout} s")
                    self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)
        finally:
            if timer is not None:
                timer.cancel()
            record["cells_seconds"] = round(time.monotonic() - started, 3)

    # -- trusted checks (autograder.trusted) ------------------------------------------------
    def _check_outside_kernel(self, cell, index: int) -> None:
        """Run a test cell here, not in the student's kernel, against answers exported from it."""
        from .trusted import KernelBridge, TrustedContext, run_check

        if self._trusted_context is None:
            self._trusted_context = TrustedContext.from_notebook(self.nb)
        started = time.monotonic()
        here = os.getcwd()
        try:
            if self.check_dir:
                os.chdir(self.check_dir)
            result = run_check(cell.source, _gid(cell) or f"#{index}", self._trusted_context,
                               KernelBridge(self._bridge_execute))
        finally:
            os.chdir(here)
        cell.outputs = result.outputs
        cell.execution_count = None
        cell.metadata.setdefault("autograder", {}).update(
            checked="outside the kernel", check_seconds=round(time.monotonic() - started, 3))
        if result.export_problem and self._timed_out_cell != index:  # a timeout is reported as one
            _execution_record(self.nb)["events"].append(
                {"kind": "export-failed", "cell": index, "grade_id": _gid(cell), "why": result.export_problem})

    def _bridge_execute(self, code: str, user_expressions: dict) -> dict:
        from jupyter_core.utils import run_sync

        return run_sync(self._async_bridge_execute)(code, user_expressions)

    async def _async_bridge_execute(self, code: str, user_expressions: dict) -> dict:
        """One silent request to the kernel; its reply's content.  A dead kernel, the notebook
        deadline or the cell time limit ends the wait (the kernel is interrupted)."""
        import queue

        msg_id = self.kc.execute(code, silent=True, store_history=False, user_expressions=user_expressions)
        deadline = time.monotonic() + (self.timeout or 600)
        while True:
            if self._deadline_hit.is_set():
                raise RuntimeError("the notebook time limit passed")
            if time.monotonic() > deadline:
                self._timed_out_cell = self._current_index
                await self.km.interrupt_kernel()
                raise TimeoutError
            try:
                msg = await self.kc.get_shell_msg(timeout=0.5)
            except queue.Empty:
                if not await self.km.is_alive():
                    raise DeadKernelError("the kernel died") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg["content"]

    def _mark_not_run(self, index: int, why: str) -> None:
        cell = self.nb.cells[index]
        cell.metadata.setdefault("autograder", {})["status"] = NOT_RUN
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            _add_error(cell, "NotRun", f"this cell did not run: {why}")

    def execute(self, **kwargs):
        """Papermill's ``execute``, minus the kernel_info request a dead kernel never answers."""
        self.reset_execution_trackers()
        with self.setup_kernel(**kwargs):
            self.papermill_execute_cells()
            if not self._deadline_hit.is_set():
                info = self.wait_for_reply(self.kc.kernel_info())
                if info:
                    self.nb.metadata["language_info"] = info["content"]["language_info"]
            self.set_widgets_metadata()
        return self.nb


def _content_size(content: dict) -> int:
    """Rough size of an output message: the text and data it would add to the notebook."""
    size = len(content.get("text", "") or "")
    for value in (content.get("data") or {}).values():
        size += len(value) if isinstance(value, str) else len(str(value))
    return size


def _is_test(cell) -> bool:
    """An autograded test cell: graded code that is not an answer."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _gid(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _add_error(cell, ename: str, evalue: str) -> None:
    if cell.cell_type != "code":
        return
    cell.setdefault("outputs", []).append(
        nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])
    )


class AutograderEngine(NBClientEngine):
    """Papermill engine ``autograder``: nbclient with grading semantics (see module doc)."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man,
        kernel_name,
        log_output=False,
        stdout_file=None,
        stderr_file=None,
        start_timeout=60,
        execution_timeout=None,
        notebook_timeout=None,
        **kwargs,
    ):
        kwargs.pop("input_path", None)
        client = GradingNotebookClient(
            nb_man,
            notebook_timeout=notebook_timeout,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            **kwargs,
        )
        return client.execute()


def execute_assembled(
    nb: NotebookNode,
    workdir: Path,
    output_path: Path,
    *,
    kernel_name: str,
    cell_timeout: float | None,
    notebook_timeout: float | None,
    kernel_manager_class: str | None = None,
    start_timeout: float = 60,
    km=None,
    trusted_checks: bool = False,
    check_dir: str | None = None,
) -> NotebookNode:
    """Execute ``nb`` in ``workdir`` and return the executed notebook.

    ``km``, when given, is a kernel manager whose kernel was started ahead of
    time in ``workdir``; it is used for this notebook and then shut down.
    Errors in cells are part of the result (they score 0), never exceptions.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import remove_error_markers

    engine_kwargs: dict[str, Any] = {}
    if kernel_manager_class:
        engine_kwargs["kernel_manager_class"] = kernel_manager_class
    if km is not None:
        engine_kwargs["km"] = km
    try:
        executed = papermill.execute_notebook(
            nb,
            str(output_path),
            engine_name="autograder",
            kernel_name=kernel_name,
            cwd=str(workdir),
            progress_bar=False,
            request_save_on_cell_execute=True,
            execution_timeout=cell_timeout,
            notebook_timeout=notebook_timeout,
            start_timeout=start_timeout,
            trusted_checks=trusted_checks,
            check_dir=check_dir,
            **engine_kwargs,
        )
    except PapermillExecutionError:
        # papermill wrote the notebook (with its error banner) before raising
        executed = nbformat.read(str(output_path), as_version=4)
    finally:
        if km is not None:  # nbclient leaves a kernel it did not start running
            from .worker import stop_kernel

            stop_kernel(km)
    executed = remove_error_markers(executed)
    return executed
