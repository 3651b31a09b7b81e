"""``prefbench label serve|status``: the labelling page, and what people answered."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_label_parser(sub: argparse._SubParsersAction) -> None:
    """The ``label`` command and its subcommands."""
    lab = sub.add_parser("label", help="human labels: serve the labelling page, show answers")
    lsub = lab.add_subparsers(dest="label", required=True)
    serve = lsub.add_parser("serve", help="serve the labelling page of a label queue")
    status = lsub.add_parser("status", help="answers, labellers and agreement of a label queue")
    for p in (serve, status):
        p.add_argument(
            "--queue",
            type=Path,
            default=None,
            help="label queue folder (default: $PREFBENCH_LABEL_QUEUE, else the cache's)",
        )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: local)")
    serve.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    serve.add_argument(
        "--token",
        default=os.environ.get("PREFBENCH_LABEL_TOKEN", ""),
        help="secret every request carries (required off 127.0.0.1; made up if not given)",
    )


def run_label(args: argparse.Namespace) -> None:
    """Carry out ``prefbench label ...``."""
    from prefbench.envs.human.queue import LabelQueue, agreement
    from prefbench.envs.human.teacher import default_queue

    folder = args.queue or default_queue()
    if args.label == "serve":
        from prefbench.benchmarks.label_server import serve

        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535], got {args.port}")
        serve(folder, args.host, args.port, args.token)
        return
    if not (folder / "queue.sqlite").is_file():
        raise ValueError(f"{folder} is not a label queue (no queue.sqlite)")
    queue = LabelQueue(folder)
    progress = queue.progress()
    stats = agreement(queue.answers())
    print(f"queue {folder}: {progress['answered']} answers, {progress['waiting']} pairs waiting")
    print(f"labellers: {', '.join(progress['labellers']) or '-'}")
    print(
        f"agreement between labellers: {stats['labeller_agreement']:.3f} over "
        f"{stats['labeller_pairs']} pairs of answers; with the oracle: "
        f"{stats['oracle_agreement']:.3f} over {stats['oracle_answers']} answers"
    )
