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


def test_first_command_is_the_paired_main_job_in_one_process_on_every_core():
    """The README's first command: the paired quick SR run, started with plain `python` (one
    process with every CPU thread; `accelerate launch` would set OMP_NUM_THREADS=1 and warn about
    the values it guesses)."""
    first = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1).splitlines()
    command = next(line for line in first if "launch/sr.py" in line)
    assert command.startswith("pip install -e . && python launch/sr.py ")
    assert "--preset quick" in command and "--attention none bam" in command


def test_a_single_cpu_process_on_one_thread_says_how_to_use_every_core(monkeypatch, capsys):
    import torch

    from tasks.common import distributed
    from tasks.utils import messages

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(messages, "_noted", set())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        distributed._note_cpu_threads(num_processes=1)
        distributed._note_cpu_threads(num_processes=1)  # once
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().err
    assert out.count("note: training on the CPU with 1 of its 8 threads") == 1
    assert "python launch/sr.py" in out and "--num_cpu_threads_per_process 8" in out
    distributed._note_cpu_threads(num_processes=2)  # one thread per process is right for several
    assert capsys.readouterr().out == ""
