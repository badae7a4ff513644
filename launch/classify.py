"""Train a classifier (+BAM) on many GPUs: ``accelerate launch launch/classify.py --dataset imagenet ...``.

Also runs as ``python launch/classify.py ...`` (one process). See ``tasks/classify/train.py``.
"""

import _checkout  # noqa: F401  (this checkout's packages first)
from tasks.classify.train import main

if __name__ == "__main__":
    main()
