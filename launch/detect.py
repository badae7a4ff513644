"""Train Faster R-CNN ResNet101 (+BAM) on COCO.

    accelerate launch launch/detect.py --data-root DATA --backbone-weights R101.pth [--attention bam]

Also runs as ``python launch/detect.py ...`` (one process). See ``tasks/detect/train.py`` for options.
"""

import _checkout  # noqa: F401  (this checkout's packages first)
from tasks.detect.train import main

if __name__ == "__main__":
    main()
