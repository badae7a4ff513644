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


def test_first_command_is_the_main_job_as_the_description_names_it():
    """The README's first command is the paired main job started exactly as the project describes
    it, with no option: every default (preset, pair, data) must make it work."""
    first = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1).splitlines()
    command = next(line for line in first if "launch/sr.py" in line)
    assert command == "pip install -e . && accelerate launch launch/sr.py"


def _threads_under_accelerate_launch(tmp_path, **env) -> int:
    import os
    import subprocess
    import sys

    script = tmp_path / "threads.py"
    script.write_text("import torch\nfrom tasks.common.distributed import make_accelerator\n"
                      "make_accelerator('no')\nprint(torch.get_num_threads())\n")
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environment.update(PYTHONPATH=str(README.parent), CUDA_VISIBLE_DEVICES="", **env)
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)],
                          capture_output=True, text=True, env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def test_accelerate_launch_on_a_cpu_uses_every_core_unless_the_user_chose(tmp_path):
    import os

    import pytest

    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("one core: nothing to tell apart")
    # The launcher's own default (OMP_NUM_THREADS=1) is replaced by every core...
    assert _threads_under_accelerate_launch(tmp_path) == cores
    # ...but a thread count the user set is kept.
    assert _threads_under_accelerate_launch(tmp_path, OMP_NUM_THREADS="1") == 1
