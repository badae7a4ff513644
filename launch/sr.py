"""Train SRResNet (+BAM): ``accelerate launch launch/sr.py [--preset quick|t91|srgan] ...``.

Also runs as ``python launch/sr.py ...`` (one process). See ``tasks/sr/train.py`` for options.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, installed or not

from tasks.sr.train import main  # noqa: E402

if __name__ == "__main__":
    main()
