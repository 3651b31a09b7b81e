"""``prefbench lm ...``: the language-model track's commands (``pretrain`` for now)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

#: One line of help per base-model setting.
_PRETRAIN_HELP = {
    "n_layer": "transformer blocks",
    "n_embd": "width",
    "n_head": "attention heads",
    "n_positions": "longest sequence",
    "dropout": "dropout",
    "block_size": "tokens per training window",
    "batch_size": "windows per step",
    "steps": "optimiser steps",
    "lr": "peak learning rate",
    "warmup_steps": "warm-up steps",
    "weight_decay": "AdamW weight decay",
    "eval_every": "steps between held-out losses and checkpoints",
    "eval_windows": "held-out windows per evaluation",
    "seed": "seed of the weights and windows",
}


def add_lm_parser(sub: argparse._SubParsersAction) -> None:
    """The ``lm`` command and its subcommands."""
    from prefbench.agents.lm.config import PretrainConfig

    lm = sub.add_parser("lm", help="the language-model track: base models")
    lsub = lm.add_subparsers(dest="lm", required=True)
    pre = lsub.add_parser(
        "pretrain", help="build (or find) a text task's small GPT-2 base model, cached"
    )
    pre.add_argument("task", help="text task id (see `prefbench list tasks`)")
    pre.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    for f in dataclasses.fields(PretrainConfig):
        pre.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=None,
            help=f"{_PRETRAIN_HELP[f.name]} (default: the task's)",
        )


def run_lm(args: argparse.Namespace) -> None:
    """Carry out ``prefbench lm ...``."""
    import torch

    from prefbench.agents.lm.config import PretrainConfig, default_config
    from prefbench.agents.lm.pretrain import Pretrainer, read_info
    from prefbench.benchmarks.run_folder import git_commit
    from prefbench.envs.text_tasks import get_text_task

    task = get_text_task(args.task)
    if args.threads < 0:
        raise ValueError("--threads must be >= 0")
    torch.set_num_threads(args.threads or torch.get_num_threads())
    names = [f.name for f in dataclasses.fields(PretrainConfig)]
    config = default_config(task, **{n: getattr(args, n) for n in names})
    record = {"command": "prefbench " + shlex.join(sys.argv[1:]), "git_commit": git_commit()}
    path = Pretrainer(task, config).build(record)
    info = read_info(path)
    print(
        f"base model: {path}\n"
        f"final: parameters {info['parameters']:,}  held-out loss {info['test_loss']:.3f}  "
        f"tokens trained {info['tokens_trained']:,}  wall {info['wall_time']:.1f}s"
    )
