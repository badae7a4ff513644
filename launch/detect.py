"""Train Faster R-CNN ResNet101 (+BAM) on COCO.

    accelerate launch launch/detect.py --data-root DATA --backbone-weights R101.pth [--attention bam]

Also runs as ``python launch/detect.py ...`` (one process). See ``tasks/detect/train.py`` for options.
"""

import sys
from pathlib import Path

try:
    from tasks.detect.train import main
except ModuleNotFoundError as error:  # a plain checkout, not installed: use the repository root
    if error.name != "tasks":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tasks.detect.train import main

if __name__ == "__main__":
    main()
