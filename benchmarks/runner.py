"""Run every cell of a suite, in parallel worker processes or on a Ray cluster.

Layout of a results folder::

    OUT/suite.json          suite name, version and results format (written first)
    OUT/cells/<key>/        one run folder per cell (see ``benchmarks/run_folder.py``)
    OUT/failures/<key>.txt  traceback of a cell that crashed (removed once it succeeds)
    OUT/records.csv         long-format records: one row per cell and evaluation point

A cell is finished when its folder has ``summary.json``. A cell's key is a hash of all
that shapes its results, so a finished cell of another suite's folder with the same key
is this cell's result: ``--reuse FOLDER`` copies such cells in instead of rerunning them
(a suite that adds learned-reward variants beside another suite's true-reward and control
cells). Rerunning the same command
skips finished cells and lets unfinished ones go on from their last saved state (agents
that save one: every built-in learner) or start over, so a killed sweep resumes with no
cell lost or counted twice (records are rebuilt from the finished folders, keyed by the
cell's identity). Worker processes die with the runner (Linux ``PR_SET_PDEATHSIG``) and
hold a lock on their cell, so a rerun never races a leftover worker.
"""

from __future__ import annotations

import ctypes
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from prefbench.benchmarks.columns import (
    AGENT,
    AGENT_NAME,
    D4RL_SCORE,
    LABEL_BUDGET,
    LABELS_USED,
    RECORD_COLUMNS,
    RM_ACCURACY,
    STEPS,
    TRUE_RETURN,
    VERSION_COLUMNS,
    WALL_TIME,
)
from prefbench.benchmarks.run_folder import read_metrics, versions, write_csv
from prefbench.benchmarks.suites import SUITE_FORMAT, Cell, Suite
from prefbench.benchmarks.train import train
from prefbench.envs.files import file_lock, write_json, write_text


class ResultsFolderError(ValueError):
    """The output folder holds results of another suite or format, or is not writable."""


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep did.

    Attributes:
        total: Cells in the suite.
        skipped: Cells already finished before this run (reused ones included).
        finished: Cells finished by this run.
        failed: Keys of cells that failed in this run.
        reused: Finished cells copied in from other results folders by this run.
    """

    total: int
    skipped: int
    finished: int
    failed: tuple[str, ...]
    reused: int = 0


def prepare_folder(out: Path, suite: Suite) -> None:
    """Create ``out`` or check that it belongs to ``suite``; nothing is written over.

    Raises:
        ResultsFolderError: For a folder of another suite, version or format, or one that
            cannot be written.
    """
    marker = out / "suite.json"
    expected = {"suite": suite.name, "version": suite.version, "format": SUITE_FORMAT}
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ResultsFolderError(f"{marker} is unreadable: {exc}") from exc
        mine = {k: found.get(k) for k in expected}
        if mine != expected:
            raise ResultsFolderError(
                f"{out} holds results of suite {mine['suite']!r} version {mine['version']} "
                f"(format {mine['format']}), not {suite.name!r} version {suite.version} "
                f"(format {SUITE_FORMAT}); use another --out"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ResultsFolderError(
            f"{out} exists and is not a prefbench results folder; use another --out"
        )
    try:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        scoring = {"score": suite.score} if suite.score != "reference" else {}
        write_json(marker, {**expected, **scoring, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError as exc:
        raise ResultsFolderError(f"cannot write to {out}: {exc.strerror or exc}") from exc


def is_finished(out: Path, cell: Cell) -> bool:
    """Whether the cell's run folder is complete."""
    return (out / "cells" / cell.key / "summary.json").is_file()


def check_sources(sources: Iterable[Path]) -> list[Path]:
    """The ``--reuse`` folders, each checked to be a results folder.

    Raises:
        ResultsFolderError: For one that is not.
    """
    sources = list(sources)
    for src in sources:
        if not (src / "suite.json").is_file():
            raise ResultsFolderError(f"--reuse {src}: not a prefbench results folder")
    return sources


@contextmanager
def cell_lock(out: Path, cell: Cell) -> Iterator[bool]:
    """Hold the cell's lock file in ``out`` while the block runs; yields whether it was free.

    Whoever trains or replaces a cell's folder holds it, so a rerun never races a leftover
    worker.
    """
    with file_lock(out / "cells" / f".{cell.key}.lock") as held:
        yield held


def reuse_cells(out: Path, cells: Iterable[Cell], sources: list[Path]) -> int:
    """Copy the finished cells of ``cells`` that ``out`` lacks from other results folders.

    A copy lands under a temporary name and is renamed into place, so a kill leaves no
    half-copied cell; an unfinished attempt in ``out`` is replaced unless a worker holds
    its lock. Returns how many cells were copied.

    Args:
        out: The results folder (prepared).
        cells: The suite's cells.
        sources: Results folders, checked with :func:`check_sources`.
    """
    copied = 0
    for cell in cells:
        src = next((s for s in sources if is_finished(s, cell)), None)
        if src is None or is_finished(out, cell):
            continue
        dest = out / "cells" / cell.key
        tmp = out / "cells" / f".{cell.key}.reuse"
        with cell_lock(out, cell) as held:
            if not held:
                continue  # a worker is on it
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src / "cells" / cell.key, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        copied += 1
    return copied


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass


def run_cell(cell: Cell, out: Path, command: str, progress: Any = None, threads: int = 1) -> str:
    """Train one cell (in a worker); returns ``"done"`` or ``"failed"``.

    A crash is written to ``failures/<key>.txt`` with its traceback.

    Args:
        cell: The cell.
        out: Results folder.
        command: The sweep's command line, recorded in the run's config.
        progress: Optional queue receiving ``(key, step)`` tuples.
        threads: Torch CPU threads.
    """
    failures = out / "failures"
    cells = out / "cells"
    with cell_lock(out, cell) as held:
        if not held:
            return "busy"
        on_progress: Callable[[int], None] | None = None
        if progress is not None:

            def on_progress(step: int) -> None:
                progress.put((cell.key, step))

        try:
            train(cell.train_config(cells, threads), command=command, on_progress=on_progress)
        except Exception:  # noqa: BLE001 - any crash is recorded, then reported
            failures.mkdir(exist_ok=True)
            write_text(failures / f"{cell.key}.txt", traceback.format_exc())
            return "failed"
        (failures / f"{cell.key}.txt").unlink(missing_ok=True)
        return "done"


def _worker(cell: Cell, out: Path, command: str, queue: Any, threads: int) -> None:
    _die_with_parent()
    status = run_cell(cell, out, command, queue, threads)
    sys.exit(0 if status == "done" else 3 if status == "busy" else 1)


def _run_local(
    cells: list[Cell],
    out: Path,
    command: str,
    workers: int,
    on_done: Callable[[Cell, str], None],
    show_progress: bool,
) -> None:
    """One spawned process per cell, at most ``workers`` at a time."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    pending = list(cells)
    running: dict[str, tuple[Cell, Any]] = {}
    steps: dict[str, int] = {}
    bar = tqdm(
        total=len(cells), unit="cell", desc="cells", disable=not show_progress, file=sys.stderr
    )
    try:
        while pending or running:
            while pending and len(running) < workers:
                cell = pending.pop(0)
                proc = ctx.Process(target=_worker, args=(cell, out, command, queue, 1), daemon=True)
                proc.start()
                running[cell.key] = (cell, proc)
            while not queue.empty():
                key, step = queue.get_nowait()
                steps[key] = step
            for key, (cell, proc) in list(running.items()):
                if proc.exitcode is None:
                    continue
                proc.join()
                del running[key]
                status = (
                    "done" if is_finished(out, cell) else "busy" if proc.exitcode == 3 else "failed"
                )
                if status == "failed" and not (out / "failures" / f"{key}.txt").exists():
                    (out / "failures").mkdir(exist_ok=True)
                    write_text(
                        out / "failures" / f"{key}.txt",
                        f"worker exited with code {proc.exitcode} before finishing\n",
                    )
                on_done(cell, status)
                bar.update(1)
            if show_progress and running:
                bar.set_postfix_str(
                    "  ".join(
                        f"{running[k][0].spec.task}/{running[k][0].agent_name}:{steps.get(k, 0)}"
                        for k in running
                    )
                )
            time.sleep(0.2)
    finally:
        for _, proc in running.values():
            proc.kill()
        bar.close()


def _run_ray(
    cells: list[Cell],
    out: Path,
    command: str,
    address: str | None,
    on_done: Callable[[Cell, str], None],
    show_progress: bool,
) -> None:
    """The same cells as Ray tasks on an existing cluster or a local Ray instance."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("the ray backend needs Ray: pip install 'prefbench[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(run_cell)
        refs = {remote.remote(cell, out, command): cell for cell in cells}
        bar = tqdm(
            total=len(cells), unit="cell", desc="cells", disable=not show_progress, file=sys.stderr
        )
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                cell = refs.pop(ref)
                try:
                    status = ray.get(ref)
                except Exception:  # noqa: BLE001 - a lost worker counts as a failed cell
                    status = "failed"
                on_done(cell, status)
                bar.update(1)
        bar.close()
    finally:
        if started:
            ray.shutdown()


def build_records(out: Path, suite: Suite, cells: Iterable[Cell]) -> pd.DataFrame:
    """Long-format records of the finished cells, with normalised scores.

    The score at each evaluation point is ``(R - R_floor) / (R_ref - R_floor)``, with the
    reference (true-reward RL) and floor (random) returns the mean final returns of the
    suite's ``reference_agent`` and ``floor_agent`` on the same task.
    """
    rows: list[dict[str, Any]] = []
    for cell in cells:
        folder = out / "cells" / cell.key
        if not (folder / "summary.json").is_file():
            continue
        vers = json.loads((folder / "config.json").read_text()).get("versions", {})
        spec = cell.spec
        for rec in read_metrics(folder):
            rows.append(
                {
                    "suite": suite.name,
                    "cell": cell.key,
                    "task": spec.task,
                    AGENT: spec.agent,
                    AGENT_NAME: cell.agent_name,
                    "teacher": spec.teacher,
                    LABEL_BUDGET: spec.label_budget,
                    "seed": spec.seed,
                    STEPS: int(rec[STEPS]),
                    LABELS_USED: int(rec[LABELS_USED]),
                    TRUE_RETURN: float(rec[TRUE_RETURN]),
                    D4RL_SCORE: float(rec.get(D4RL_SCORE, math.nan)),
                    RM_ACCURACY: float(rec[RM_ACCURACY]),
                    WALL_TIME: float(rec[WALL_TIME]),
                    **{k: vers.get(k, "") for k in VERSION_COLUMNS},
                    **{k: float(rec.get(k, math.nan)) for k in suite.record_metrics},
                }
            )
    columns = [*RECORD_COLUMNS, *suite.record_metrics]
    frame = pd.DataFrame(rows, columns=[c for c in columns if c != "normalized_score"])
    if suite.score == "d4rl":
        frame["normalized_score"] = frame[D4RL_SCORE] / 100.0
    else:
        frame["normalized_score"] = normalized_scores(
            frame, suite.reference_agent, suite.floor_agent
        )
    return frame[columns]


def final_rows(records: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of each cell."""
    return records.loc[records.groupby("cell")[STEPS].idxmax()].reset_index(drop=True)


def normalized_scores(frame: pd.DataFrame, reference: str, floor: str) -> pd.Series:
    """``(R - floor) / (reference - floor)`` per task from mean final returns; NaN if unknown.

    ``reference`` and ``floor`` are agent display names (``agent_name``).
    """
    if frame.empty:
        return pd.Series(dtype=float)
    means = final_rows(frame).groupby(["task", AGENT_NAME])[TRUE_RETURN].mean()
    out = pd.Series(float("nan"), index=frame.index)
    for task, idx in frame.groupby("task").groups.items():
        ref = means.get((task, reference))
        low = means.get((task, floor))
        if ref is None or low is None or ref == low:
            continue
        out.loc[idx] = (frame.loc[idx, TRUE_RETURN] - low) / (ref - low)
    return out


def write_records(out: Path, suite: Suite, cells: list[Cell]) -> pd.DataFrame:
    """Rebuild ``records.csv`` from the finished cells (atomically) and return it."""
    frame = build_records(out, suite, cells)
    write_csv(out / "records.csv", frame)
    return frame


def run_suite(
    suite: Suite,
    out: Path,
    *,
    seeds: int | None = None,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    command: str = "",
    show_progress: bool = True,
    reuse: Iterable[Path] = (),
) -> SweepOutcome:
    """Run the suite's unfinished cells and rebuild the records.

    ``reuse``: results folders whose finished cells of the same key are copied in first
    (:func:`reuse_cells`).

    Raises:
        UnknownIdError / ValueError: Bad suite content or arguments.
        ResultsFolderError: ``out`` belongs to another suite, or is not writable.
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"unknown backend {backend!r}; valid choices: local, ray")
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise ValueError(f"--workers must be >= 1, got {n_workers}")
    cells = suite.cells(seeds)
    reuse = check_sources(reuse)  # before ``out`` is made
    prepare_folder(out, suite)
    write_json(out / "versions.json", versions())
    reused = reuse_cells(out, cells, reuse)
    todo = [c for c in cells if not is_finished(out, c)]
    skipped = len(cells) - len(todo)
    finished: list[str] = []
    failed: list[str] = []

    def on_done(cell: Cell, status: str) -> None:
        (finished if status == "done" else failed).append(cell.key)
        write_records(out, suite, cells)

    if todo:
        if backend == "local":
            _run_local(todo, out, command, n_workers, on_done, show_progress)
        else:
            _run_ray(todo, out, command, ray_address, on_done, show_progress)
    write_records(out, suite, cells)
    return SweepOutcome(len(cells), skipped, len(finished), tuple(failed), reused)
