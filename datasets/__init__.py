"""Data loaders and preparation for the BAM tasks.

This package is named ``datasets`` like Hugging Face's package; it depends on neither that
package nor on the order of ``sys.path`` (see README, "The `datasets` name").
"""

# Marker checked by ``tasks`` so that a shadowing Hugging Face ``datasets`` fails loudly.
IS_BAM_DATASETS = True
