"""``prefbench lm pretrain TASK``: a small GPT-2 base model of a text task, built once.

The base (SFT) model every method of the track starts from: a tokenizer trained on the
task's ``train`` corpus (:mod:`prefbench.agents.lm.tokenizer`), then a
GPT-2-architecture causal LM (``transformers``' ``GPT2LMHeadModel``) trained from
scratch with the next-token loss on that corpus, every text preceded by
``<|endoftext|>``, packed into one stream and cut into windows of ``block_size + 1``
tokens at random offsets. AdamW, linear warm-up then cosine decay to 10%, gradient norm
clipped at 1. The ``test`` corpus gives a held-out loss every ``eval_every`` steps.

The result is a Hugging Face checkpoint folder (``config.json``, ``model.safetensors``,
the tokenizer's files) plus ``prefbench.json`` with the settings, the task, the
corpus's hash, the losses, the command, the commit and the wall time. It lives in
``<cache>/lm/{task}-{key}``, ``key`` hashing the settings and the corpus, and is built
in a ``.partial`` folder beside it that holds a resumable checkpoint every
``eval_every`` steps and is renamed into place when done: a killed build resumes, and a
finished folder is never half-written. A lock keeps two builds of one model apart (the
second waits for the first and uses its model).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefbench.agents.lm import deps
from prefbench.agents.lm.config import PretrainConfig
from prefbench.agents.lm.tokenizer import EOS, train_tokenizer
from prefbench.envs.cache import cache_dir
from prefbench.envs.data import CheckpointError
from prefbench.envs.files import atomic_path, file_lock, write_json
from prefbench.envs.seeding import make_torch_generator, stream_seed
from prefbench.envs.text_tasks import TextTask

FORMAT = "prefbench.base_model.v1"
INFO_FILE = "prefbench.json"


def corpus_digest(texts: Sequence[str]) -> str:
    """A short SHA-256 of a corpus (texts and their boundaries)."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def model_dir(task: TextTask, config: PretrainConfig, corpus: str | None = None) -> Path:
    """Where the base model of ``task`` with ``config`` lives (built or not).

    ``corpus`` is the train corpus's :func:`corpus_digest` (computed when not given).
    """
    settings = {
        "format": FORMAT,
        "task": task.id,
        "tokenizer": [task.tokenizer, task.vocab_size],
        "corpus": corpus or corpus_digest(task.corpus("train")),
        "config": asdict(config),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return cache_dir("lm") / f"{task.id}-{key}"


def encode_corpus(tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """``(T,)`` int64: every text's tokens, each preceded by EOS, one after another."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.concatenate([np.asarray([eos, *row], dtype=np.int64) for row in ids])


def _windows(stream: torch.Tensor, starts: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size + 1)`` windows of ``stream`` beginning at ``starts``."""
    return stream[starts[:, None] + torch.arange(size + 1)]


def _lr_factor(config: PretrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Pretrainer:
    """Builds one base model (see the module docstring).

    Args:
        task: The text task.
        config: Settings.
        log: Where progress lines go.
    """

    def __init__(
        self, task: TextTask, config: PretrainConfig, log: Callable[[str], None] = print
    ) -> None:
        self.task = task
        self.config = config
        self.log = log
        self.corpus = corpus_digest(task.corpus("train"))
        self.dir = model_dir(task, config, self.corpus)
        self.partial = self.dir.with_name(self.dir.name + ".partial")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the model's build lock, waiting while another process builds it.

        Cells of a suite that share a base model then build it once: the others wait,
        find it built, and use it.
        """
        self.partial.mkdir(parents=True, exist_ok=True)
        waiting = f"{self.task.id}: waiting for another process building {self.dir}"
        with file_lock(self.partial / ".lock", wait=True, on_wait=lambda: self.log(waiting)):
            yield

    def build(self, record: dict[str, Any] | None = None) -> Path:
        """Train the model unless it exists; returns its folder.

        Args:
            record: Written into ``prefbench.json`` too (the caller's command and commit).
        """
        if (self.dir / INFO_FILE).is_file():
            return self.dir
        with self.lock():
            if (self.dir / INFO_FILE).is_file():  # built by another process meanwhile
                return self.dir
            self._train(record or {})
        return self.dir

    def _tokenizer(self) -> Any:
        path = self.partial / "tokenizer"
        tf = deps.transformers()
        if (path / "tokenizer.json").is_file():
            return tf.AutoTokenizer.from_pretrained(path)
        tok = train_tokenizer(self.task.corpus("train"), self.task.tokenizer, self.task.vocab_size)
        tmp = path.with_name("tokenizer.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, path)
        return tok

    def _model(self, vocab_size: int) -> Any:
        tf, c = deps.transformers(), self.config
        gpt2 = tf.GPT2Config(
            vocab_size=vocab_size,
            n_positions=c.n_positions,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            resid_pdrop=c.dropout,
            embd_pdrop=c.dropout,
            attn_pdrop=c.dropout,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            loss_type="ForCausalLM",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(c.seed, "lm_init"))
            return tf.GPT2LMHeadModel(gpt2)

    def _train(self, record: dict[str, Any]) -> None:
        c, start = self.config, time.perf_counter()
        tok = self._tokenizer()
        if tok.convert_tokens_to_ids(EOS) != 0:
            raise CheckpointError(f"{self.partial}/tokenizer does not put {EOS} at id 0")
        train = torch.as_tensor(encode_corpus(tok, self.task.corpus("train")))
        test = torch.as_tensor(encode_corpus(tok, self.task.corpus("test")))
        for name, stream in (("train", train), ("test", test)):
            if len(stream) <= c.block_size + 1:
                raise ValueError(f"the {name} corpus has {len(stream)} tokens, too few to train")
        model = self._model(len(tok))
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: _lr_factor(c, i))
        gen = make_torch_generator(c.seed, "lm_windows")
        eval_gen = make_torch_generator(c.seed, "lm_eval")
        eval_starts = torch.randint(
            0, len(test) - c.block_size - 1, (c.eval_windows,), generator=eval_gen
        )
        history: list[dict[str, float]] = []
        # Dropout draws from torch's global generator: seeded here, saved in checkpoints.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(c.seed, "lm_dropout"))
            step, spent = self._restore(model, opt, sched, gen, history)
            while step < c.steps:
                model.train()
                starts = torch.randint(
                    0, len(train) - c.block_size - 1, (c.batch_size,), generator=gen
                )
                batch = _windows(train, starts, c.block_size)
                mask = torch.ones_like(batch)
                loss = model(input_ids=batch, attention_mask=mask, labels=batch).loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"base-model loss is {loss.item()} at step {step}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                if step % c.eval_every == 0 or step == c.steps:
                    test_loss = self._test_loss(model, test, eval_starts)
                    history.append(
                        {"step": step, "train_loss": loss.item(), "test_loss": test_loss}
                    )
                    spent_now = spent + time.perf_counter() - start
                    self._checkpoint(model, opt, sched, gen, history, step, spent_now)
                    self.log(
                        f"{self.task.id}: step {step}/{c.steps} train loss {loss.item():.3f} "
                        f"test loss {test_loss:.3f}"
                    )
        wall = spent + time.perf_counter() - start
        final = self.partial / "final"
        shutil.rmtree(final, ignore_errors=True)
        model.save_pretrained(final)
        tok.save_pretrained(final)
        write_json(
            final / INFO_FILE,
            {
                "format": FORMAT,
                "task": self.task.info,
                "config": asdict(c),
                "corpus": self.corpus,
                "train_tokens": len(train),
                "parameters": sum(p.numel() for p in model.parameters()),
                "vocab_size": len(tok),
                "history": history,
                "test_loss": history[-1]["test_loss"],
                "tokens_trained": c.steps * c.batch_size * c.block_size,
                "wall_time": wall,
                "threads": torch.get_num_threads(),
                **record,
            },
        )
        os.replace(final, self.dir)
        shutil.rmtree(self.partial, ignore_errors=True)
        self.log(f"{self.task.id}: base model in {self.dir} ({wall:.0f}s)")

    @torch.no_grad()
    def _test_loss(self, model: Any, test: torch.Tensor, starts: torch.Tensor) -> float:
        model.eval()
        losses = [
            model(input_ids=b, attention_mask=torch.ones_like(b), labels=b).loss.item()
            for b in _windows(test, starts, self.config.block_size).split(64)
        ]
        return float(np.mean(losses))

    def _checkpoint(
        self,
        model: Any,
        opt: torch.optim.Optimizer,
        sched: Any,
        gen: torch.Generator,
        history: list[dict[str, float]],
        step: int,
        spent: float,
    ) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "step": step,
            "spent": spent,
        }
        with atomic_path(self.partial / "checkpoint.pt") as tmp:
            torch.save(state, tmp)

    def _restore(
        self,
        model: Any,
        opt: torch.optim.Optimizer,
        sched: Any,
        gen: torch.Generator,
        history: list[dict[str, float]],
    ) -> tuple[int, float]:
        path = self.partial / "checkpoint.pt"
        if not path.is_file():
            return 0, 0.0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            history.extend(state["history"])
        except (
            OSError,
            RuntimeError,
            KeyError,
            ValueError,
            EOFError,
            pickle.UnpicklingError,
        ) as exc:
            raise CheckpointError(f"{path} is corrupt ({exc}); remove {self.partial}") from exc
        self.log(f"{self.task.id}: resuming at step {state['step']}")
        return int(state["step"]), float(state["spent"])


def read_info(path: str | Path) -> dict[str, Any]:
    """The ``prefbench.json`` of a base-model folder.

    Raises:
        CheckpointError: If there is none or it is not a prefbench base model's.
    """
    file = Path(path) / INFO_FILE
    try:
        info = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a prefbench base model ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a prefbench base-model record")
    return info
