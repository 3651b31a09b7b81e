"""Unfinished runs go on from their last saved state."""

import json

import pandas as pd
import pytest
from tiny import tiny_config

from prefbench.benchmarks.train import train


class Stop(KeyboardInterrupt):
    """Stands in for Ctrl-C in the middle of training."""


def _interrupt_at(step_limit):
    def on_progress(step):
        if step >= step_limit:
            raise Stop

    return on_progress


def _cfg(tmp_path, agent, **kw):
    return tiny_config(tmp_path, agent, **{"steps": 4096, **kw})


@pytest.mark.parametrize("agent", ["pref-ppo", "ppo"])
def test_interrupted_run_resumes_from_last_state(tmp_path, agent):
    cfg = _cfg(tmp_path, agent)
    with pytest.raises(Stop):
        train(cfg, on_progress=_interrupt_at(2560))
    run = next(tmp_path.iterdir())
    assert not (run / "summary.json").exists()
    assert (run / "resume" / "latest").read_text() == "step-000000002048"
    before = pd.read_csv(run / "metrics.csv")
    assert list(before["steps"]) == [0, 1024, 2048]

    summary = train(cfg)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["steps"]) == [0, 1024, 2048, 3072, 4096]
    # Rows written before the interruption are kept as they were.
    pd.testing.assert_frame_equal(metrics.iloc[:3], before, check_dtype=False)
    assert metrics["wall_time"].is_monotonic_increasing
    assert summary["steps"] == 4096
    config = json.loads((run / "config.json").read_text())
    assert config["resumed_at"] == [2048]
    assert not (run / "resume").exists()
    if agent == "pref-ppo":
        assert list(metrics["labels_used"])[-1] == 40
        assert metrics["labels_used"].is_monotonic_increasing


def test_changed_config_or_broken_state_starts_over(tmp_path):
    cfg = _cfg(tmp_path, "ppo")
    with pytest.raises(Stop):
        train(cfg, on_progress=_interrupt_at(2560))
    run = next(tmp_path.iterdir())
    state = run / "resume" / "step-000000002048"
    (state / "policy.zip").write_bytes(b"not a zip")
    train(cfg)
    config = json.loads((run / "config.json").read_text())
    assert "resumed_at" not in config
    assert list(pd.read_csv(run / "metrics.csv")["steps"]) == [0, 1024, 2048, 3072, 4096]

    other = _cfg(tmp_path / "b", "ppo")
    with pytest.raises(Stop):
        train(other, on_progress=_interrupt_at(2560))
    longer = _cfg(tmp_path / "b", "ppo", steps=5120)
    train(longer)
    run_b = next((tmp_path / "b").iterdir())
    config_b = json.loads((run_b / "config.json").read_text())
    assert "resumed_at" not in config_b and config_b["run"]["spec"]["steps"] == 5120
