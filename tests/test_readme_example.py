"""The README's plug-in example works as printed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _example_blocks() -> tuple[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own agent") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = bash.replace("\\\n", " ").strip().splitlines()
    return code, commands


def test_readme_plugin_example_runs(tmp_path: Path) -> None:
    code, commands = _example_blocks()
    assert len(commands) == 2
    (tmp_path / "my_agents.py").write_text(code)
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for command in commands:
        proc = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "final: steps" in proc.stdout
    summaries = {
        p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("runs/*/summary.json")
    }
    assert set(summaries) == {
        "pendulum-my_agents.ZeroAgent-s0",
        "pendulum-my_agents.UniformQueryAgent-oracle-100-s0",
    }
    assert summaries["pendulum-my_agents.UniformQueryAgent-oracle-100-s0"]["labels_used"] == 100
    assert (
        0.0
        <= summaries["pendulum-my_agents.UniformQueryAgent-oracle-100-s0"]["final_rm_accuracy"]
        <= 1.0
    )
    assert summaries["pendulum-my_agents.ZeroAgent-s0"]["steps"] == 1000
