"""Super-resolution with SRResNet (+BAM), paper Sec. 5.7 / Table 8.

Commands: ``accelerate launch launch/sr.py`` (train, see ``tasks.sr.train``),
``python -m tasks.sr.evaluate`` (score a checkpoint or bicubic on Set5/Set14...),
``python -m tasks.sr.upscale`` (upscale your own images); also ``python -m tasks.sr {train,evaluate,upscale}``.
Model: :func:`tasks.sr.model.srresnet`.
"""
