"""Train UperNet (+BAM) for scene parsing: ``accelerate launch launch/parse.py --data-root DATA [--attention bam]``.

Also runs as ``python launch/parse.py ...`` (one process). See ``tasks/parse/train.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, installed or not

from tasks.parse.train import main  # noqa: E402

if __name__ == "__main__":
    main()
