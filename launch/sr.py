"""Train SRResNet (+BAM): ``accelerate launch launch/sr.py [--preset quick|t91|srgan] ...``.

Also runs as ``python launch/sr.py ...`` (one process). See ``tasks/sr/train.py`` for options.
"""

import sys
from pathlib import Path

try:
    from tasks.sr.train import main
except ModuleNotFoundError as error:  # a plain checkout, not installed: use the repository root
    if error.name != "tasks":
        raise
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tasks.sr.train import main

if __name__ == "__main__":
    main()
