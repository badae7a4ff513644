"""Scene parsing (paper Sec. 5.8): UperNet with a ResNet encoder, with or without BAM, on ADE20K.

``model`` builds the network, ``metrics`` pools mIoU over a data set from one confusion matrix,
``train`` / ``evaluate`` are the command lines, ``visualize`` draws prediction overlays. The data
live in :mod:`tasks.data.ade20k` (labels 0..149, ignore index 255).
"""
