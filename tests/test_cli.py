import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prefbench.agents import AGENTS
from prefbench.benchmarks.cli import main
from prefbench.envs.tasks import TASKS
from prefbench.envs.teachers import BPREF_TEACHERS


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_tasks(capsys):
    code, out, err = run(capsys, "list", "tasks")
    assert code == 0 and err == ""
    lines = out.splitlines()
    for name in TASKS:
        assert any(line.split()[0] == name for line in lines[1:])
    pendulum = next(line for line in lines if line.startswith("pendulum "))
    assert pendulum.split() == ["pendulum", "control", "Pendulum-v1", "200", "30"]


def test_list_tasks_names_the_extra_an_offline_task_lacks(capsys, monkeypatch):
    from prefbench.envs import tasks

    monkeypatch.setitem(tasks.EXTRA_MODULES, "mujoco", "no_such_simulator_xyz")
    code, out, _ = run(capsys, "list", "tasks")
    hopper = next(line for line in out.splitlines() if line.startswith("hopper-medium-replay "))
    assert code == 0 and hopper.endswith("(needs prefbench[mujoco])"), hopper


def test_list_agents(capsys):
    code, out, _ = run(capsys, "list", "agents")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert listed == set(AGENTS)
    pref = next(line for line in out.splitlines() if line.startswith("pref-ppo "))
    assert "teacher" in pref
    ppo = next(line for line in out.splitlines() if line.startswith("ppo "))
    assert "teacher" not in ppo


def test_list_teachers(capsys):
    code, out, _ = run(capsys, "list", "teachers")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()[1:]]
    assert listed == [*BPREF_TEACHERS, "human"]
    assert "prefbench label serve" in out.splitlines()[-1]
    myopic = next(line for line in out.splitlines() if line.startswith("myopic"))
    assert "0.9" in myopic.split()


def train_args(tmp_path, *extra, task="pendulum", agent="pref-ppo"):
    return [
        "train",
        "--task",
        task,
        "--agent",
        agent,
        "--out",
        str(tmp_path / "runs"),
        "--no-progress",
        "--steps",
        "100",
        "--labels",
        "10",
        *extra,
    ]


ERROR_CASES = {
    "unknown task": dict(task="nope"),
    "unknown task import path": dict(task="nope_module_xyz:TASK"),
    "task path to a non-task": dict(task="prefbench.envs.tasks:CLIP_SECONDS"),
    "unknown agent": dict(agent="nope"),
    "unknown teacher": dict(extra=("--teacher", "nope")),
    "steps 0": dict(extra=("--steps", "0")),
    "labels 0": dict(extra=("--labels", "0")),
    "negative seed": dict(extra=("--seed", "-1")),
    "bad set key": dict(extra=("--set", "rl.nope=1")),
    "bad set value": dict(extra=("--set", "rl.n_envs=abc")),
    "invalid set value": dict(extra=("--set", "rl.n_envs=0")),
    "malformed set": dict(extra=("--set", "novalue")),
    "set on agent without config": dict(agent="random", extra=("--set", "rl.n_envs=2")),
    "eval episodes 0": dict(extra=("--eval-episodes", "0")),
    "negative eval every": dict(extra=("--eval-every", "-5")),
    "threads 0": dict(extra=("--threads", "0")),
    "bad device": dict(extra=("--device", "not-a-device")),
    "unknown algo kwarg": dict(extra=("--set", 'rl.algo_kwargs={"bogus": 1}')),
    "algo kwarg the learner rejects": dict(extra=("--set", 'rl.algo_kwargs={"batch_size": 1}')),
    "teacher path to a non-teacher": dict(
        extra=("--teacher", "prefbench.envs.teachers:BPREF_TEACHERS")
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_train_errors_exit_2_with_one_line(case, capsys, tmp_path):
    spec = ERROR_CASES[case]
    argv = train_args(
        tmp_path,
        *spec.get("extra", ()),
        task=spec.get("task", "pendulum"),
        agent=spec.get("agent", "pref-ppo"),
    )
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert err.startswith("prefbench: error:")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert not list((tmp_path / "runs").glob("*/summary.json"))


def test_unknown_ids_name_valid_choices(capsys, tmp_path):
    _, _, err = run(capsys, *train_args(tmp_path, task="nope"))
    assert "'nope'" in err and "pendulum" in err
    _, _, err = run(capsys, *train_args(tmp_path, agent="nope"))
    assert "pref-ppo" in err
    _, _, err = run(capsys, *train_args(tmp_path, "--teacher", "nope"))
    assert "oracle" in err and "myopic" in err


def test_cuda_device_unavailable(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, _, err = run(capsys, *train_args(tmp_path, "--device", "cuda"))
    assert code == 2 and err.startswith("prefbench: error:") and err.count("\n") == 1


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    argv = [
        "train",
        "--task",
        "pendulum",
        "--agent",
        "pref-ppo",
        "--out",
        str(blocker / "sub"),
        "--steps",
        "100",
        "--labels",
        "10",
        "--no-progress",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("prefbench: error:") and err.count("\n") == 1
    assert blocker.read_text() == "a regular file"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train"],  # missing --task
        ["bogus"],
        ["list"],
        ["list", "nothing"],
        ["train", "--task", "pendulum", "--steps", "many"],
        ["train", "--task", "pendulum", "--no-such-flag"],
    ],
)
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def console_script() -> str:
    found = shutil.which("prefbench")
    if found:
        return found
    candidate = Path(sys.executable).parent / "prefbench"
    assert candidate.is_file(), "the prefbench console script is not installed"
    return str(candidate)


def test_console_script_unknown_task(tmp_path):
    proc = subprocess.run(
        [console_script(), "train", "--task", "nope", "--out", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("prefbench: error:")
    assert proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_list_suites(capsys):
    code, out, _ = run(capsys, "list", "suites")
    assert code == 0
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"quick", "christiano-mujoco", "christiano-mujoco-cpu", "teachers", "lm"} <= names


RUN_ERRORS = {
    "unknown suite": (["run", "nope"], "unknown suite"),
    "zero seeds": (["run", "quick", "--seeds", "0"], "seeds"),
    "zero workers": (["run", "quick", "--workers", "0"], "workers"),
    "bad backend": (["run", "quick", "--backend", "slurm"], "backend"),
    "zero budget": (["run", "plugin_example:ZERO_BUDGET_SUITE"], "label budgets"),
    "no checkpoint": (["run", "lm"], "needs --set base_model="),
    "bad run override": (["run", "quick", "--set", "nope=1"], "nope"),
    "report of a non-results folder": (["report", "."], "not a prefbench results folder"),
}


@pytest.mark.parametrize("case", sorted(RUN_ERRORS))
def test_run_and_report_errors_exit_2(case, capsys, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    argv, needle = RUN_ERRORS[case]
    if argv[0] == "run":
        argv = [*argv, "--out", str(tmp_path / "res"), "--no-progress"]
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefbench: error:")
    assert needle in lines[0]
    assert not (tmp_path / "res" / "cells").exists()


def test_run_into_another_suites_folder_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    out = tmp_path / "res"
    out.mkdir()
    marker = out / "suite.json"
    marker.write_text('{"suite": "other", "version": 1, "format": 1}')
    code, _, err = run(capsys, "run", "plugin_example:TINY_SUITE", "--out", str(out))
    assert code == 2 and "other" in err and err.count("\n") == 1
    assert marker.read_text() == '{"suite": "other", "version": 1, "format": 1}'
    assert not (out / "cells").exists()


def test_perf_reward_model_cnn_prints_throughput_and_memory(capsys):
    code, out, _ = run(
        capsys, "perf", "reward-model", "--encoder", "cnn", "--clip", "3", "--batch", "2",
        "--seconds", "0.05", "--threads", "1", "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    assert "clips/s" in out
    assert "memory per 1,000 stored clips" in out and "(2.00x)" in out  # 6 frames, not 12


def test_perf_reward_model_clip_defaults_to_the_encoders_task(capsys):
    # The conv ensemble is the Atari network: its clips are Atari's 25 steps by default.
    common = ("--batch", "1", "--seconds", "0.01", "--threads", "1", "--device", "cpu")
    code, out, _ = run(capsys, "perf", "reward-model", "--encoder", "cnn", *common)
    assert code == 0 and "clip 25 steps" in out
    code, out, _ = run(capsys, "perf", "reward-model", "--hidden", "4", *common)
    assert code == 0 and "clip 50," in out


def test_perf_frames_compares_true_and_learned_reward(capsys):
    code, out, _ = run(
        capsys, "perf", "frames", "--task", "pendulum", "--envs", "2", "--steps", "40",
        "--rounds", "1", "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    assert "true reward" in out and "learned reward" in out and "% of the frames" in out


def test_perf_bn_calibration_reports_both_accuracies(capsys):
    pytest.importorskip("ale_py")
    code, out, _ = run(
        capsys, "perf", "bn-calibration", "--steps", "1000", "--pairs", "12", "--train-pairs",
        "8", "--epochs", "1", "--batch", "4", "--calibration-pairs", "4", "--threads", "1",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0
    assert "8 training and 4 test pairs" in out
    assert "epoch   1: accuracy on decided test pairs" in out and "re-estimated" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("perf", "frames", "--task", "nope"),
        ("perf", "frames", "--envs", "0"),
        ("perf", "reward-model", "--encoder", "cnn", "--frame-stack", "0"),
        ("perf", "bn-calibration", "--task", "pendulum"),
        ("perf", "bn-calibration", "--pairs", "10", "--train-pairs", "10"),
        ("perf", "offline", "--learner", "nope"),
        ("perf", "offline", "--seeds", "0"),
        ("perf", "offline", "--set", "nope=1"),
        ("perf", "offline", "--learner", "dt", "--set", "n_embd=0"),
    ],
)
def test_perf_bad_input_exits_2(argv, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("prefbench: error:") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("learner", "setting"), [("rwr", "hidden_sizes=8,8"), ("dt", "n_embd=8")])
def test_perf_offline_compares_batched_and_separate_seeds(learner, setting, capsys):
    code, out, _ = run(
        capsys, "perf", "offline", "--learner", learner, "--seeds", "2", "--updates", "2",
        "--rounds", "1", "--steps", "2000", "--threads", "1", "--set", setting,
    )  # fmt: skip
    assert code == 0, out
    assert setting in out and "batched / separate:" in out


def test_perf_overhead_compares_an_agent_with_its_baseline(capsys, tmp_path):
    code, out, _ = run(
        capsys, "perf", "overhead", "--task", "pendulum", "--steps", "256", "--labels", "20",
        "--out", str(tmp_path), "--set", "rl.n_steps=128", "--set", "loop.random_steps=400",
        "--set", "loop.initial_epochs=1",
    )  # fmt: skip
    assert code == 0
    assert "overhead on pendulum, 256 steps: train time" in out
    assert (tmp_path / "baseline").is_dir() and (tmp_path / "preference").is_dir()
    code, _, err = run(capsys, "perf", "overhead", "--agent", "ppo", "--baseline", "ppo")
    assert code == 2 and "must differ" in err
