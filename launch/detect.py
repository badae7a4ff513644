"""Train Faster R-CNN ResNet101 (+BAM) on COCO.

    accelerate launch launch/detect.py --data-root DATA --backbone-weights R101.pth [--attention bam]

Also runs as ``python launch/detect.py ...`` (one process). See ``tasks/detect/train.py`` for options.
"""

import sys
from pathlib import Path

# This checkout's packages first: the launcher belongs to the repository it sits in, installed or
# not (an install from another checkout would otherwise run that checkout's code).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.detect.train import main  # noqa: E402

if __name__ == "__main__":
    main()
