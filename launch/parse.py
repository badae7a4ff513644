"""Train UperNet (+BAM) for scene parsing: ``accelerate launch launch/parse.py --data-root DATA [--attention bam]``.

Also runs as ``python launch/parse.py ...`` (one process). See ``tasks/parse/train.py``.
"""

import _checkout  # noqa: F401  (this checkout's packages first)
from tasks.parse.train import main

if __name__ == "__main__":
    main()
