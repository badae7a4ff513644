"""The task side of the repository, built on the ``bam`` core.

- ``tasks.utils``: tiny helpers (atomic files, progress bars, ...) importing nothing of the repository;
- ``tasks.data``: data loaders and their conventions (one data root, MATLAB bicubic, ...);
- ``tasks.common``: what every task shares (the run skeleton, the Accelerate training loop,
  checkpoints, tracking, summaries);
- ``tasks.sr``, ``tasks.classify``, ``tasks.parse``, ``tasks.detect``: one task each;
- ``tasks.report``, ``tasks.analysis``, ``tasks.profile``: comparisons, attention maps and
  class selectivity, parameter and MAC counts against the paper;
- ``tasks.networks``: every network of the repository by name (``build_network("resnet50", "cifar100",
  attention="bam")``); the task packages register their own.

See ``docs/architecture.md`` for which part may import which.
"""
