"""Train SRResNet (+BAM): ``accelerate launch launch/sr.py [--preset quick|t91|srgan] ...``.

Also runs as ``python launch/sr.py ...`` (one process). See ``tasks/sr/train.py`` for options.
"""

import _checkout  # noqa: F401  (this checkout's packages first)
from tasks.sr.train import main

if __name__ == "__main__":
    main()
