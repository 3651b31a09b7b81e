"""The structure the tracks share: schedules, lazy registries, kinds, scoping, bad input."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prefbench.agents import AGENTS
from prefbench.agents.schedule import PreferenceSchedule
from prefbench.benchmarks.cli import main
from prefbench.benchmarks.columns import RECORD_COLUMNS, migrate_metrics, migrate_records
from prefbench.benchmarks.report import load_records, write_report
from prefbench.envs.kinds import BUDGET_UNITS, Budget
from prefbench.envs.registry import Registry, UnknownIdError
from prefbench.envs.seeding import scoped_torch
from prefbench.envs.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------- the schedule
def test_preference_schedule_table():
    # 10k steps, 100 labels, 25 up front, refits every 500 steps (a twentieth of the run).
    schedule = PreferenceSchedule.build(
        10_000,
        100,
        initial_labels=0,
        initial_fraction=0.25,
        decay_steps=2e6,
        update_every=10_000,
    )
    assert schedule.update_every == 500 and schedule.initial_labels == 25
    table = [  # (step, last refit) -> (labels wanted, refit due)
        ((0, 0), (25, False)),
        ((499, 0), (28, False)),
        ((500, 0), (28, True)),
        ((512, 500), (29, False)),
        ((1000, 500), (32, True)),
        ((4750, 4250), (62, True)),
        ((9500, 9000), (100, True)),
        ((9999, 9500), (100, False)),
        ((10_000, 9500), (100, True)),
    ]
    for (step, last), want in table:
        assert (schedule.labels_wanted(step), schedule.fit_due(step, last)) == want, step


def test_preference_schedule_initial_labels_and_long_runs():
    atari = PreferenceSchedule.build(
        12_500_000,
        3300,
        initial_labels=500,
        initial_fraction=0.25,
        decay_steps=5e6,
        update_every=10_000,
    )
    assert atari.update_every == 10_000 and atari.labels_wanted(0) == 500
    counts = [atari.labels_wanted(s) for s in range(0, 12_500_001, 500_000)]
    assert counts == sorted(counts) and counts[-1] == 3300
    # The rate c / (T + c) falls: the first half of the run gets most of the labels.
    assert atari.labels_wanted(6_250_000) - 500 > (3300 - 500) / 2


# ------------------------------------------------------------------- registries
def test_lazy_registry_imports_on_first_use_only():
    reg: Registry[int] = Registry("widget")
    reg.register("later", "no_such_module_xyz:THING", note="lazy")
    assert reg.names() == ["later"] and reg.info("later") == {"note": "lazy"}
    assert "no_such_module_xyz" not in sys.modules
    with pytest.raises(UnknownIdError, match="no_such_module_xyz"):
        reg.get("later")
    reg.register("pi", "math:pi", overwrite=True)
    assert reg.get("pi") == pytest.approx(3.14159, abs=1e-5)


def test_agent_catalogue_matches_the_agents():
    for name in AGENTS:
        info, spec = AGENTS.info(name), AGENTS.get(name)
        assert info["description"], name
        assert info["uses_teacher"] == spec.uses_teacher, name


def test_list_works_without_optional_extras():
    # MuJoCo, the Atari emulator and Ray made unimportable, as on a base install.
    code = (
        "import sys\n"
        "for m in ('mujoco', 'ale_py', 'ray', 'cv2'):\n"
        "    sys.modules[m] = None\n"
        "from prefbench.benchmarks.cli import main\n"
        "assert main(['list', 'presets']) == 0\n"
        "print('---')\n"
        "assert main(['list', 'agents']) == 0\n"
        "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules\n"
        "assert main(['list', 'tasks']) == 0\n"
        "assert main(['list', 'teachers']) == 0\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    presets, listing = proc.stdout.split("---\n")
    assert "zoo" in presets
    lines = {line.split()[0]: line for line in listing.splitlines() if line.strip()}
    assert "needs prefbench[mujoco]" in lines["halfcheetah"]
    assert lines["pendulum"].split()[-1] == "30"  # classic control needs no extra
    assert lines["pong"].split()[-1] == "25"  # fixed Atari clips need no emulator


# ------------------------------------------------------------------ kinds, budget
def test_budget_follows_the_task_kind():
    task = get_task("pendulum")
    assert task.kind == "control"
    assert Budget.for_task(task, 100) == Budget(100, BUDGET_UNITS["control"])
    with pytest.raises(ValueError, match=">= 1"):
        Budget.for_task(task, 0)
    with pytest.raises(ValueError, match="unknown budget unit"):
        Budget(5, "furlongs")


def test_scoped_torch_restores_threads_and_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    with scoped_torch(seed=7, threads=threads + 1):
        assert torch.get_num_threads() == threads + 1
        inside = torch.rand(3)
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(torch.rand(3), expected)  # the outer stream went on untouched
    with scoped_torch(seed=7, threads=1):
        torch.testing.assert_close(torch.rand(3), inside)  # the run's stream is its seed's


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "argv",
    [
        ["--agent", "prefbench.envs.data:Labels"],
        ["--agent", "prefbench.envs.tasks:get_task"],
        ["--set", "reward.lr=inf"],
        ["--set", "rl.gamma=-inf"],
        ["--set", "loop.label_decay_steps=nan"],
        ["--steps", "0"],
        ["--label-budget", "0"],
    ],
)
def test_bad_train_input_is_one_line_and_exit_2_before_any_work(argv, tmp_path, capsys):
    code = main(["train", "--task", "pendulum", "--out", str(tmp_path / "runs"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("prefbench: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()  # rejected before a folder was made


# ------------------------------------------------------------- results folders
def test_old_column_names_are_migrated():
    import pandas as pd

    old = pd.DataFrame(
        {"step": [0], "labels": [3], "eval_true_return": [1.0], "rm_accuracy": [0.5]}
    )
    assert list(migrate_metrics(old).columns) == [
        "steps",
        "labels_used",
        "true_return",
        "rm_accuracy",
    ]
    old_records = pd.DataFrame({"agent": ["PPO"], "agent_id": ["ppo"], "labels": [0]})
    new = migrate_records(old_records)
    assert new["agent"].tolist() == ["ppo"] and new["agent_name"].tolist() == ["PPO"]
    assert migrate_records(new).equals(new)  # current names pass through


@pytest.mark.parametrize(
    "folder", sorted(p.parent.name for p in (ROOT / "results").glob("*/report.md"))
)
def test_committed_reports_are_reproduced_from_their_records(folder, tmp_path):
    src = ROOT / "results" / folder
    for name in ("suite.json", "records.csv"):
        shutil.copy(src / name, tmp_path / name)
    assert set(RECORD_COLUMNS) <= set(load_records(tmp_path).columns)
    write_report(tmp_path)
    assert (tmp_path / "report.md").read_text() == (src / "report.md").read_text()
    assert (tmp_path / "report.tex").read_text() == (src / "report.tex").read_text()


def test_missing_extra_and_bad_selector_are_caught_before_any_work(monkeypatch, tmp_path, capsys):
    from prefbench.envs import tasks

    monkeypatch.setitem(tasks.EXTRA_MODULES, "mujoco", "no_such_simulator_xyz")
    code = main(["train", "--task", "halfcheetah", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'prefbench[mujoco]'" in err and err.count("\n") == 1
    # A class that is not a selector factory (it takes no options) fails up front too.
    query = "--set=loop.query=prefbench.agents.query:UniformSelector"
    code = main(["train", "--task", "pendulum", query, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_old_finished_run_summary_reads_under_current_names(tmp_path):
    import json

    from tiny import tiny_config

    from prefbench.benchmarks.train import train

    cfg = tiny_config(tmp_path, "random", overrides=())
    run_dir = tmp_path / "pendulum-random-s0"
    run_dir.mkdir()
    old = {"labels": 0, "steps": 2048, "final_rm_accuracy": float("nan")}
    (run_dir / "summary.json").write_text(json.dumps(old))
    assert train(cfg) == {"labels_used": 0, "steps": 2048, "final_rm_accuracy": None}


def test_label_dataset_saves_under_any_suffix(tmp_path):
    import numpy as np

    from prefbench.envs.data import ClipPairs, PreferenceDataset, load_dataset, save_dataset

    pairs = ClipPairs(
        np.zeros((2, 2, 3, 1)), np.zeros((2, 2, 3, 1)), np.zeros((2, 2, 3), np.float32)
    )
    save_dataset(PreferenceDataset(pairs, np.array([1.0, 0.0], np.float32)), tmp_path / "x.dat")
    assert load_dataset(tmp_path / "x.dat").prefs.tolist() == [1.0, 0.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dat"]
