"""Train a classifier (+BAM) on many GPUs: ``accelerate launch launch/classify.py --dataset imagenet ...``.

Also runs as ``python launch/classify.py ...`` (one process). See ``tasks/classify/train.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, installed or not

from tasks.classify.train import main  # noqa: E402

if __name__ == "__main__":
    main()
