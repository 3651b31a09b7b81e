"""Suites, the sweep runner and resumption after kills."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from prefbench.agents.config import ConfigError
from prefbench.benchmarks.runner import ResultsFolderError, prepare_folder, run_suite
from prefbench.benchmarks.suites import SUITES, AgentEntry, Suite
from prefbench.envs.registry import UnknownIdError

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    import plugin_example

    return plugin_example


def test_builtin_suites_expand_and_validate():
    assert {"quick", "christiano-mujoco", "christiano-mujoco-cpu", "teachers"} <= set(SUITES)
    paper = SUITES.get("christiano-mujoco")
    cells = paper.cells()
    pref = [c for c in cells if c.spec.agent == "pref-trpo"]
    assert {c.spec.label_budget for c in pref} == {350, 700, 1400}
    assert len({c.spec.task for c in cells}) == 8
    assert len(cells) == 8 * (3 + 1 + 1) * 3
    teachers = SUITES.get("teachers").cells()
    assert {c.spec.teacher for c in teachers if c.spec.teacher} == {
        "oracle",
        "stochastic",
        "mistake",
        "skip",
        "equal",
        "myopic",
    }
    assert len({c.key for c in cells}) == len(cells)


def test_run_overrides_reach_every_agent_and_required_ones_are_checked():
    lm = SUITES.get("lm")
    assert lm.size() == 7 * 3  # listed without its checkpoint
    with pytest.raises(ValueError, match=r"suite 'lm' needs --set base_model=\.\.\."):
        lm.cells()
    given = lm.with_overrides(("base_model=/data/gpt2",))
    assert all(e.overrides[-1] == "base_model=/data/gpt2" for e in given.agents)
    quick = SUITES.get("lm-quick")
    moved = quick.with_overrides(("temperature=0.7",)).cells()
    assert {c.key for c in moved}.isdisjoint(c.key for c in quick.cells())  # own folders
    assert quick.with_overrides(()) is quick
    # An agent's own budget (PPO's in lm-cpu) reaches its cells only.
    cpu = SUITES.get("lm-cpu").cells(seeds=1)
    assert {c.spec.agent: c.spec.steps for c in cpu}["lm-ppo"] == 600_000
    assert {c.spec.steps for c in cpu if c.spec.agent != "lm-ppo"} == {200_000}


def test_cell_identity_changes_with_config(plugin):
    cell = plugin.TINY_SUITE.cells()[0]

    def changed(**fields):
        return replace(cell, spec=replace(cell.spec, **fields))

    assert changed(steps=cell.spec.steps + 1).key != cell.key
    assert changed(overrides=("rl.n_envs=3",)).key != cell.key
    assert replace(cell, agent_name="renamed").key == cell.key  # display only
    assert cell.key == plugin.TINY_SUITE.cells()[0].key  # stable
    assert changed(accuracy_pairs=200).key != cell.key
    assert changed(accuracy_pairs=200).train_config(Path("x")).spec.accuracy_pairs == 200


def test_published_cell_keys_do_not_move():
    # The committed christiano-mujoco-cpu results (suite version 2, no preset) name
    # their cells by these keys; version 3's preset gives its cells new ones.
    suite = SUITES.get("christiano-mujoco-cpu")
    v2 = replace(suite, preset="").cells()
    assert v2[0].key == "halfcheetah-pref-ppo-oracle-350-s0-8e2ce12484"
    assert suite.cells()[0].key != v2[0].key


def test_suite_rejects_bad_content(plugin):
    with pytest.raises(ValueError, match="label budgets >= 1"):
        plugin.ZERO_BUDGET_SUITE.cells()
    with pytest.raises(UnknownIdError):
        replace(plugin.TINY_SUITE, tasks=("nope",)).cells()
    with pytest.raises(UnknownIdError):
        replace(plugin.TINY_SUITE, agents=(AgentEntry("nope"),)).cells()
    with pytest.raises(ValueError, match="seeds"):
        plugin.TINY_SUITE.cells(seeds=0)
    with pytest.raises(ValueError, match="step budget"):
        Suite("x", "x", tasks=("pendulum",), agents=(AgentEntry("random"),)).cells()
    bad_override = AgentEntry("ppo", overrides=("rl.nope=1",))
    with pytest.raises(ConfigError, match="rl.nope"):
        replace(plugin.TINY_SUITE, agents=(bad_override,)).cells()


def test_prepare_folder_guards_foreign_results(plugin, tmp_path):
    out = tmp_path / "res"
    prepare_folder(out, plugin.TINY_SUITE)
    prepare_folder(out, plugin.TINY_SUITE)  # same suite: fine
    with pytest.raises(ResultsFolderError, match="tiny"):
        prepare_folder(out, plugin.OTHER_SUITE)
    with pytest.raises(ResultsFolderError, match="version"):
        prepare_folder(out, replace(plugin.TINY_SUITE, version=2))
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ResultsFolderError, match="not a prefbench results folder"):
        prepare_folder(stranger, plugin.TINY_SUITE)
    assert (stranger / "notes.txt").read_text() == "mine"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsFolderError, match="cannot write"):
        prepare_folder(blocker / "sub", plugin.TINY_SUITE)


def test_local_sweep_runs_every_cell_and_resumes(plugin, tmp_path):
    suite = plugin.TINY_SUITE
    out = tmp_path / "res"
    outcome = run_suite(suite, out, workers=2, show_progress=False)
    cells = suite.cells()
    assert outcome.total == len(cells) == 8
    assert outcome.finished == 8 and outcome.skipped == 0 and outcome.failed == ()
    records = pd.read_csv(out / "records.csv")
    assert set(records["cell"]) == {c.key for c in cells}
    final = records.loc[records.groupby("cell")["steps"].idxmax()]
    assert (final["steps"] >= 512).all()
    pref_final = final[final["agent"] == "pref-ppo"]
    assert sorted(pref_final["label_budget"]) == [10, 10, 20, 20]
    assert pref_final["rm_accuracy"].between(0, 1).all()
    by_agent = final.groupby("agent")["normalized_score"].mean()
    assert by_agent["ppo"] == pytest.approx(1.0)
    assert by_agent["random"] == pytest.approx(0.0)
    for col in ("torch", "prefbench", "git_commit"):
        assert records[col].notna().all()
    for cell in cells:
        assert (out / "cells" / cell.key / "tb").is_dir()

    before = (out / "records.csv").read_text()
    again = run_suite(suite, out, workers=2, show_progress=False)
    assert again.skipped == 8 and again.finished == 0
    assert (out / "records.csv").read_text() == before

    # Another suite with some of the same cells takes them over instead of running them.
    other, copy = replace(suite, name="tiny-copy"), tmp_path / "copy"
    with pytest.raises(ResultsFolderError, match="not a prefbench results folder"):
        run_suite(other, copy, reuse=[tmp_path / "nowhere"], show_progress=False)
    assert not copy.exists()
    prepare_folder(copy, other)
    (copy / "cells" / cells[0].key).mkdir()  # an unfinished attempt: replaced
    took = run_suite(other, copy, workers=2, show_progress=False, reuse=[out])
    assert took.reused == took.skipped == 8 and took.finished == 0
    copied = pd.read_csv(copy / "records.csv")
    pd.testing.assert_frame_equal(
        copied.drop(columns="suite"), pd.read_csv(out / "records.csv").drop(columns="suite")
    )


def test_crashing_cell_is_recorded_and_others_finish(plugin, tmp_path):
    out = tmp_path / "res"
    outcome = run_suite(plugin.CRASH_SUITE, out, workers=2, show_progress=False)
    assert len(outcome.failed) == 1 and outcome.finished == 2
    (key,) = outcome.failed
    assert "boom: this cell crashes on purpose" in (out / "failures" / f"{key}.txt").read_text()
    records = pd.read_csv(out / "records.csv")
    assert set(records["agent"]) == {"ppo", "random"}


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")
def test_sigkill_worker_and_parent_then_rerun_completes(plugin, tmp_path):
    out = tmp_path / "res"
    # Prepend: an install that is itself on PYTHONPATH must stay importable.
    path = os.pathsep.join(filter(None, (str(TESTS_DIR), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    cmd = [
        sys.executable,
        "-m",
        "prefbench.benchmarks.cli",
        "run",
        "plugin_example:SLOW_SUITE",
        "--out",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    ]
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        # Wait until one cell is finished and workers are busy with others.
        while time.time() < deadline:
            done = list(out.glob("cells/*/summary.json"))
            started = [
                p for p in out.glob("cells/*") if p.is_dir() and not (p / "summary.json").exists()
            ]
            workers = [p for p in _children(parent.pid) if _alive(p)]
            if done and started and workers:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep made no progress")
        workers = [p for p in _children(parent.pid) if _alive(p)]
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(0.5)
        survivors = [p for p in _children(parent.pid) if _alive(p)]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        time.sleep(1.0)
        assert not any(_alive(p) for p in survivors), "workers must die with the runner"
    finally:
        if parent.poll() is None:
            parent.kill()
    finished_before = {p.parent.name for p in out.glob("cells/*/summary.json")}
    cells = plugin.SLOW_SUITE.cells()
    assert 0 < len(finished_before) < len(cells)

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished_before)} already done" in rerun.stdout
    keys = {c.key for c in cells}
    assert {p.parent.name for p in out.glob("cells/*/summary.json")} == keys
    records = pd.read_csv(out / "records.csv")
    assert set(records["cell"]) == keys
    # One row per cell and evaluation point: nothing counted twice.
    assert not records.duplicated(["cell", "steps"]).any()
    final = records.loc[records.groupby("cell")["steps"].idxmax()]
    assert len(final) == len(cells)
    assert not list(out.glob("failures/*.txt"))
    summary = json.loads(next(out.glob("cells/*/summary.json")).read_text())
    assert summary["steps"] >= 6144


def test_ray_backend_runs_a_tiny_suite(plugin, tmp_path):
    pytest.importorskip("ray")
    suite = replace(plugin.TINY_SUITE, agents=plugin.TINY_SUITE.agents[1:], seeds=1)
    out = tmp_path / "res"
    outcome = run_suite(suite, out, backend="ray", show_progress=False)
    assert outcome.finished == 2 and outcome.failed == ()
    records = pd.read_csv(out / "records.csv")
    assert set(records["agent"]) == {"ppo", "random"}


def test_every_registered_suite_expands_to_distinct_cells():
    for name in SUITES:
        suite = SUITES.get(name)
        try:
            cells = suite.cells(seeds=1)
        except ValueError as err:  # suites that need a user's checkpoint (lm)
            assert "needs --set" in str(err), name
            continue
        assert len({c.key for c in cells}) == len(cells) > 0, name
    gate = SUITES.get("offline-gate-cpu").cells(seeds=1)
    budgets = {c.spec.agent: c.spec.label_budget for c in gate}
    assert budgets["pref-dt"] == budgets["pref-mle-filter"] == 500
    assert {budgets[a] for a in ("bc", "dt", "zero-dt", "mle-filter", "zero-mle-filter")} == {0}
