"""Data loaders: every data set the tasks read, all under one data root (:mod:`tasks.data.root`).

The top-level ``datasets/`` folder holds data and preparation scripts, not code to import: a
package of that name would shadow Hugging Face's ``datasets``, which Accelerate imports. The
loaders import nothing of the training side (``tasks.common`` and the task packages).
"""
