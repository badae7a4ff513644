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
