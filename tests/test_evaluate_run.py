"""``prefbench evaluate``: a run's agent restored from its folder, played, and filmed."""

import json
import math
import shutil
from pathlib import Path

import pytest
from PIL import Image
from tiny import tiny_config

from prefbench.benchmarks.cli import main
from prefbench.benchmarks.train import train
from prefbench.benchmarks.watch import evaluate_run
from prefbench.envs.seeding import int31_seed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    pref = train(tiny_config(out))
    random = train(tiny_config(out, "random", overrides=()))
    return pref, random


def test_the_restored_agent_plays_as_the_trained_one(runs):
    pref, _ = runs
    run_dir = pref["run_dir"]
    # The final evaluation is one of the first few rounds; its seed replays its episode.
    replayed = [
        evaluate_run(Path(run_dir), 1, seed=int31_seed(0, f"eval{r}"))[0].true_return
        for r in range(6)
    ]
    assert pref["final_true_return"] in [pytest.approx(x, abs=1e-3) for x in replayed]
    again = evaluate_run(Path(run_dir), 2)
    assert again == evaluate_run(Path(run_dir), 2)  # the same seed, the same numbers
    assert all(r.steps == 200 and math.isfinite(r.learned_return) for r in again)


def test_video_shows_every_episode(runs, tmp_path):
    pref, _ = runs
    video = tmp_path / "sub" / "episodes.webp"
    evaluate_run(Path(pref["run_dir"]), 2, video=video)
    with Image.open(video) as img:
        assert img.format == "WEBP"
        shown_ms = 0
        for i in range(img.n_frames):  # the encoder merges repeated frames, not their time
            img.seek(i)
            img.load()
            shown_ms += img.info["duration"]
    assert shown_ms == (2 * 200 + 5) * 50  # two episodes and a pause, at Pendulum's 20 fps
    gif = tmp_path / "episodes.gif"
    evaluate_run(Path(pref["run_dir"]), 1, video=gif)
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.n_frames > 1


def test_cli_prints_a_row_per_episode(runs, capsys):
    pref, random = runs
    assert main(["evaluate", pref["run_dir"], "--episodes", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["episode", "steps", "true_return", "learned_return"]
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2", "mean"]
    assert main(["evaluate", random["run_dir"], "--episodes", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "n/a"  # no reward model


@pytest.mark.parametrize(
    ("damage", "argv", "message"),
    [
        (None, ["--episodes", "0"], "episodes must be >= 1"),
        (None, ["--video", "clip.avi"], "video must end in"),
        (None, ["--seed", "-1"], "seed must be >= 0"),
        ("config", [], "is not a prefbench run folder"),
        ("foreign", [], "is not a prefbench run config"),
        ("state", [], "holds no agent state"),
        ("policy", [], "cannot restore the agent"),
    ],
)
def test_bad_input_exits_2(runs, tmp_path, capsys, damage, argv, message):
    run_dir = tmp_path / "run"
    shutil.copytree(runs[0]["run_dir"], run_dir)
    ckpt = run_dir / "checkpoints"
    if damage == "config":
        (run_dir / "config.json").write_text("{not json")
    elif damage == "foreign":
        (run_dir / "config.json").write_text(json.dumps({"hello": 1}))
    elif damage == "state":
        (ckpt / "state.json").unlink()
    elif damage == "policy":
        (ckpt / "policy.zip").write_bytes(b"not a zip")
    assert main(["evaluate", str(run_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prefbench: error: ") and message in err and err.count("\n") == 1


def test_a_missing_folder_exits_2(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "no run folder" in capsys.readouterr().err
