"""Text agents through the common harness: prefbench train, records, and bad input."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")

from lm_tiny import tiny_config  # noqa: E402

from prefbench.agents.lm.pretrain import Pretrainer  # noqa: E402
from prefbench.benchmarks.cli import main  # noqa: E402
from prefbench.benchmarks.columns import CONDITIONS, condition_column  # noqa: E402
from prefbench.benchmarks.text_evaluation import best_of_n_kl  # noqa: E402
from prefbench.envs.text_tasks import get_text_task  # noqa: E402

TINY = tiny_config(n_positions=48, steps=30, eval_every=30)
SMALL = [
    "--set",
    "prompts=16",
    "--set",
    "samples_per_prompt=2",
    "--set",
    "reward.epochs=2",
    "--set",
    "reward.test_pairs=20",
    "--set",
    "report_every=5",
]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(1)
    path = Pretrainer(get_text_task("digit-parity"), TINY, lambda _: None).build()
    mp.undo()
    return path


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("agent", ["lm-mle-filter", "lm-dt", "lm-dpo", "lm-ppo"])
def test_text_agents_train_and_record(base, tmp_path, agent):
    extra = ["--set", "ppo.mini_batch_size=4", "--set", "ppo.batch_size=8"]
    args = [
        "train",
        "--task",
        "digit-parity",
        "--agent",
        agent,
        "--label-budget",
        "20",
        "--steps",
        "400",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--set",
        f"base_model={base}",
        *SMALL,
        *(extra if agent == "lm-ppo" else []),
    ]
    assert main(args) == 0
    (run_dir,) = tmp_path.iterdir()
    rows = _rows(run_dir)
    assert rows[0]["steps"] == "0" and int(rows[-1]["steps"]) == 400
    last = rows[-1]
    for column in ("true_return", "kl_per_token", "distinct_1", "flops", "flops_train"):
        assert column in last and last[column] != "", column
    assert float(last["flops_train"]) > 0 and float(last["flops"]) >= float(last["flops_train"])
    assert float(last["kl_per_token"]) != 0.0  # the policy moved away from the reference
    if agent == "lm-dt":  # scored at every conditioning value, with their rank correlation
        for value in CONDITIONS:
            assert last[condition_column(value)] != "", value
        assert "condition_spearman" in last
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["budget_unit"] == "tokens" and summary["labels_used"] > 0
    assert (run_dir / "checkpoints" / "model" / "config.json").is_file()


def test_sft_is_the_base_model(base, tmp_path):
    args = [
        "train",
        "--task",
        "digit-parity",
        "--agent",
        "lm-sft",
        "--steps",
        "100",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--set",
        f"base_model={base}",
    ]
    assert main(args) == 0
    (run_dir,) = tmp_path.iterdir()
    rows = _rows(run_dir)
    assert [r["steps"] for r in rows] == ["0"]
    assert float(rows[0]["kl_per_token"]) == 0.0 and float(rows[0]["flops"]) == 0.0


def test_best_of_n_trains_nothing_and_pays_its_analytic_kl(base, tmp_path):
    args = [
        "train",
        "--task",
        "digit-parity",
        "--agent",
        "lm-best-of-n",
        "--label-budget",
        "20",
        "--steps",
        "100",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--set",
        f"base_model={base}",
        "--set",
        "best_of=4",
        *SMALL,
    ]
    assert main(args) == 0
    (run_dir,) = tmp_path.iterdir()
    (row,) = _rows(run_dir)
    assert float(row["flops_train"]) == 0.0 and float(row["flops_score"]) > 0
    # KL per token = (log n - (n-1)/n) per response / mean response length
    per_token = best_of_n_kl(4) / float(row["response_tokens"])
    assert float(row["kl_per_token"]) == pytest.approx(per_token)
    assert float(row["learned_score"]) == float(row["learned_score"])  # scored, not NaN


def test_bad_text_runs_are_rejected(base, tmp_path, capsys):
    def run(*args):
        return main(["train", "--out", str(tmp_path), "--no-progress", *args])

    assert run("--task", "halfcheetah", "--agent", "lm-dt", "--label-budget", "10") == 2
    assert "trains on text tasks; 'halfcheetah' is a control task" in capsys.readouterr().err
    assert run("--task", "digit-parity", "--agent", "pref-ppo", "--label-budget", "10") == 2
    assert "trains on control tasks" in capsys.readouterr().err
    assert (
        run(
            "--task",
            "digit-parity",
            "--agent",
            "lm-dt",
            "--label-budget",
            "10",
            "--set",
            f"base_model={tmp_path / 'missing'}",
            "--steps",
            "10",
        )
        == 2
    )
    assert "no config.json" in capsys.readouterr().err
    assert (
        run(
            "--task",
            "digit-parity",
            "--agent",
            "lm-dt",
            "--label-budget",
            "10",
            "--set",
            "method=magic",
        )
        == 2
    )
    assert "method must be one of" in capsys.readouterr().err


def test_perf_lm_prints_generation_and_training_rates(base, capsys):
    common = ["perf", "lm", "--task", "digit-parity", "--model", str(base), "--threads", "1"]
    small = ["--prompts", "8", "--batch", "8", "--single", "2", "--new-tokens", "4"]
    assert main([*common, *small, "--train-batch", "4", "--train-steps", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "gradient checkpointing off" in out
    for line in ("prompts per call:", "one prompt per call:", "batched / one at a time:"):
        assert line in out
    assert "sequences per step:" in out and "GFLOP/s" in out
    assert main([*common, "--batch", "0"]) == 2
    assert "--batch must be >= 1" in capsys.readouterr().err
    assert main([*common, "--model", str(base.parent / "missing")]) == 2


class _Stop(Exception):
    pass


@pytest.mark.parametrize("agent", ["lm-dt", "lm-dpo", "lm-ppo"])
def test_interrupted_text_run_resumes_exactly(base, tmp_path, agent):
    from prefbench.benchmarks.run_spec import RunSpec, TrainConfig
    from prefbench.benchmarks.train import train

    sets = [a for a in SMALL if a != "--set"] + [f"base_model={base}", "report_every=1"]
    if agent == "lm-ppo":
        sets += ["ppo.mini_batch_size=4", "ppo.batch_size=8"]

    def cfg(out):
        spec = RunSpec(
            task="digit-parity",
            agent=agent,
            label_budget=20,
            steps=2400,
            eval_every=800,
            overrides=tuple(sets),
        )
        return TrainConfig(spec, out=out, threads=1, progress=False)

    def stop(step):
        if step >= 1200:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg(tmp_path / "cut"), on_progress=stop)
    (run,) = (tmp_path / "cut").iterdir()
    before = pd.read_csv(run / "metrics.csv")
    assert len(before) == 2 and (run / "resume" / "latest").is_file()
    summary = train(cfg(tmp_path / "cut"))
    assert summary["steps"] == 2400
    resumed_at = json.loads((run / "config.json").read_text())["resumed_at"]
    assert resumed_at == [int(before["steps"].iloc[1])]
    resumed = pd.read_csv(run / "metrics.csv")
    whole = pd.read_csv(f"{train(cfg(tmp_path / 'whole'))['run_dir']}/metrics.csv")
    # The policy, trainer, counters and evaluation streams resume exactly.
    timing = ["wall_time", "train_time"]
    pd.testing.assert_frame_equal(
        resumed.drop(columns=timing), whole.drop(columns=timing), check_dtype=False
    )


@pytest.mark.parametrize("method", ["dt", "dpo", "ppo"])
def test_trainers_take_the_runs_seed(base, tmp_path, method):
    import logging

    from prefbench.agents.lm.agent import PrefTextAgent, TextAgentConfig
    from prefbench.agents.protocol import RunContext
    from prefbench.envs.kinds import Budget
    from prefbench.envs.seeding import make_rng
    from prefbench.envs.teachers import make_teacher

    task = get_text_task("digit-parity")
    ctx = RunContext(task, 7, Budget.for_task(task, 100), 20, "cpu", tmp_path, logging.getLogger())
    config = TextAgentConfig(method=method, base_model=str(base), prompts=16, samples_per_prompt=2)
    agent = PrefTextAgent(ctx, make_teacher("oracle", make_rng(7, "teacher")), config)
    agent._prepare()
    assert agent.trainer.config.seed == 7


def test_a_human_labelled_text_run_matches_the_oracle_run(base, tmp_path):
    import sqlite3

    from human_helpers import ScriptedLabeller, Served

    from prefbench.envs.human.queue import LabelQueue

    def run(teacher, *extra):
        args = [
            "train",
            "--task",
            "digit-parity",
            "--agent",
            "lm-dpo",
            "--teacher",
            teacher,
            "--label-budget",
            "20",
            "--steps",
            "200",
            "--out",
            str(tmp_path / teacher),
            "--no-progress",
            "--set",
            f"base_model={base}",
            *SMALL,
            *extra,
        ]
        assert main(args) == 0
        (run_dir,) = (tmp_path / teacher).iterdir()
        return json.loads((run_dir / "summary.json").read_text())

    queue_dir = tmp_path / "queue"
    LabelQueue(queue_dir)
    with Served(queue_dir) as served:
        labeller = ScriptedLabeller(served.base, queue_dir)
        labeller.start()
        human = run("human", "--label-queue", str(queue_dir), "--label-timeout", "120")
        labeller.stop.set()
    oracle = run("oracle")
    # People were shown the prompt and both continuations as text.
    with sqlite3.connect(queue_dir / "queue.sqlite") as db:
        kinds = {k for (k,) in db.execute("SELECT kind FROM queries")}
        prompts = [p for (p,) in db.execute("SELECT prompt FROM queries")]
    assert kinds == {"text"} and all(prompts)
    # A pair asked twice (the tiny model repeats itself) is one query, answered once.
    assert labeller.answered == len(prompts) <= human["labels_used"]
    # Answered like the oracle, the run is the oracle run, and no batch waited it out.
    assert human["labels_used"] == oracle["labels_used"] > 0
    assert human["final_true_return"] == oracle["final_true_return"]
    assert human["wall_time"] < 60
