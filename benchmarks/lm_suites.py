"""The language-model suites: offline alignment (MLE-filter, RWR, DT) beside DPO and PPO.

``normalized_score`` is 0 for the base model (``lm-sft``) and 1 for PPO (``lm-ppo``) on
each task, so an offline method's score is its share of PPO's gain in ground-truth score
over the base model (the issue's 90% target). The budget (``steps``) counts response
tokens trained on; in ``lm-cpu`` PPO gets three times the offline methods' (it samples
its own data and needs more updates), so its FLOPs share is measured, not fixed by the
budget. FLOPs (``flops`` and its parts) are in the records.
"""

from __future__ import annotations

from prefbench.benchmarks.columns import TEXT_RECORD_METRICS
from prefbench.benchmarks.suites import AgentEntry, Suite

#: The methods trained from preferences (the longest first: a suite's cells start in
#: this order, so no worker is left with a long cell at the end).
METHODS = ("ppo", "dt", "mle-filter", "rwr", "dpo", "best-of-n")


def lm_agents(
    label_budgets: tuple[int, ...],
    overrides: tuple[str, ...] = (),
    steps: dict[str, int] | None = None,
) -> tuple:
    """The base model, then every method at each label budget.

    Args:
        label_budgets: Label budgets of every method.
        overrides: Config overrides of every agent.
        steps: Method -> its own token budget (others: the suite's).
    """
    own = steps or {}
    return (
        AgentEntry("lm-sft", overrides=overrides),
        *(
            AgentEntry(
                f"lm-{m}", label_budgets=label_budgets, overrides=overrides, steps=own.get(m, 0)
            )
            for m in METHODS
        ),
    )


#: A smaller sample pool and reward-model fit: every cell in a minute or two on a CPU.
QUICK = ("prompts=128", "reward.epochs=30")

LM_QUICK = Suite(
    name="lm-quick",
    description="minutes on a CPU: digit-parity, its tiny base model, 200 labels, "
    "SFT, MLE-filter, RWR, DT, DPO, PPO, best-of-16, 2 seeds",
    tasks=("digit-parity",),
    agents=lm_agents((200,), QUICK),
    steps={"*": 200_000},
    seeds=2,
    eval_every=50_000,
    reference_agent="lm-ppo",
    floor_agent="lm-sft",
    record_metrics=TEXT_RECORD_METRICS,
)

#: The sample pool of lm-cpu: 1,024 prompts x 4 samples (about 100k response tokens), so
#: the offline methods' 200k-token budget is about two passes over it.
CPU_POOL = ("prompts=1024",)

LM_CPU = Suite(
    name="lm-cpu",
    description="imdb-positive with the small base model built here, 500 labels, every "
    "method, 3 seeds; offline methods and DPO 200k tokens, PPO 600k",
    tasks=("imdb-positive",),
    agents=lm_agents((500,), CPU_POOL, steps={"ppo": 600_000}),
    steps={"*": 200_000},
    seeds=3,
    eval_every=100_000,
    reference_agent="lm-ppo",
    floor_agent="lm-sft",
    record_metrics=TEXT_RECORD_METRICS,
)

LM = Suite(
    name="lm",
    description="imdb-positive with a local causal-LM checkpoint (prefbench run lm --set "
    "base_model=/data/gpt2), 1,000 labels, every method, 3 seeds: a GPU machine's job, "
    "not yet run",
    tasks=("imdb-positive",),
    agents=lm_agents((1000,), ("prompts=1024",)),
    steps={"*": 2_000_000},
    seeds=3,
    eval_every=250_000,
    reference_agent="lm-ppo",
    floor_agent="lm-sft",
    record_metrics=TEXT_RECORD_METRICS,
    required_overrides=("base_model",),
)
