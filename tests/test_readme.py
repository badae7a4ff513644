"""The README's code runs as written and prints what its comments say."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_bam_example_runs_and_matches_its_comments(capsys):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.split("\n")
    assert printed[:3] == ["['layer1', 'layer2', 'layer3']", "25918689", "3940120320"]
    # ... and each number is the one its comment quotes.
    for value in printed[1:3]:
        assert f"# {value}:" in block
    maps = namespace["maps"]
    assert len(maps) == 3 and all({"channel", "spatial", "combined"} <= set(m) for m in maps.values())


def test_first_command_runs_the_paired_main_job_without_launcher_warnings():
    """The README's first command: the paired quick SR run under `accelerate launch` with the
    repository's one-process settings, so the launcher has nothing to guess and warn about."""
    import os
    import subprocess
    import sys

    first = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1).splitlines()
    command = next(line for line in first if "launch/sr.py" in line)
    assert "--config_file launch/one_process.yaml" in command and "--preset quick" in command
    assert "--attention none bam" in command
    repo = README.parent
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(repo / "launch" / "one_process.yaml"), str(repo / "launch" / "sr.py"), "--help"],
                          capture_output=True, text=True, cwd=repo, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "were not passed" not in done.stderr and "--global-residual" in done.stdout
