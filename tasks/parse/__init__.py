"""Scene parsing (paper Sec. 5.8): UperNet with a ResNet encoder, with or without BAM, on ADE20K.

* ``tasks.parse.model``: :class:`~tasks.parse.model.UperNet` (registered as ``upernet-resnet50`` etc.
  for ``python -m tasks.profile ... --dataset ade20k``), encoder checkpoint loading, size breakdowns;
* ``tasks.parse.metrics``: pixel accuracy / mIoU pooled over a data set from one confusion matrix;
* ``tasks.parse.train``: ``accelerate launch launch/parse.py --data-root DATA [--attention bam]``;
* ``tasks.parse.evaluate``: ``python -m tasks.parse.evaluate --checkpoint RUN [--multi-scale]``;
* ``tasks.parse.visualize``: prediction / ground-truth colour overlays.

The data live in :mod:`tasks.data.ade20k` (labels 0..149, ignore index 255).
"""
