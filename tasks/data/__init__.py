"""Data loaders: every data set the tasks read, and the conventions they share.

Everything is found under one data root (:func:`tasks.data.root.data_root`: ``--data-root``, else
``$BAM_DATA_ROOT``, else the repository's ``datasets/`` folder, where the small sets that ship
live). The top-level ``datasets/`` folder holds data and preparation scripts, not code to import:
a package of that name would shadow Hugging Face's ``datasets``, which Accelerate imports.

The loaders import nothing of the training side (``tasks.common`` and the task packages).
"""
