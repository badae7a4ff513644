"""Train Faster R-CNN ResNet101 (+BAM) on COCO.

    accelerate launch launch/detect.py --data-root DATA --backbone-weights R101.pth [--attention bam]

Also runs as ``python launch/detect.py ...`` (one process). See ``tasks/detect/train.py`` for options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, installed or not

from tasks.detect.train import main  # noqa: E402

if __name__ == "__main__":
    main()
