"""Train a classifier (+BAM) on many GPUs: ``accelerate launch launch/classify.py --dataset imagenet ...``.

Also runs as ``python launch/classify.py ...`` (one process). See ``tasks/classify/train.py``.
"""

import sys
from pathlib import Path

try:
    from tasks.classify.train import cli
except ModuleNotFoundError as error:  # a plain checkout, not installed: use the repository root
    if error.name != "tasks":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tasks.classify.train import cli

if __name__ == "__main__":
    cli()
