"""Imported first by every launcher: this checkout's packages go first on ``sys.path``.

A launcher belongs to the repository it sits in, installed or not: an install from another
checkout would otherwise run that checkout's code. ``python launch/X.py`` and ``accelerate launch
launch/X.py`` both run the script with ``launch/`` first on the path, so ``import _checkout``
finds this file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
