"""Train UperNet (+BAM) for scene parsing: ``accelerate launch launch/parse.py --data-root DATA [--attention bam]``.

Also runs as ``python launch/parse.py ...`` (one process). See ``tasks/parse/train.py``.
"""

import sys
from pathlib import Path

# This checkout's packages first: the launcher belongs to the repository it sits in, installed or
# not (an install from another checkout would otherwise run that checkout's code).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.parse.train import main  # noqa: E402

if __name__ == "__main__":
    main()
