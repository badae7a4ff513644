"""Object detection (paper Sec. 5.5): Faster R-CNN with a ResNet101 (+ BAM) backbone on COCO.

``model`` builds the detector, ``coco_eval`` scores it with pycocotools' COCOeval, ``train`` /
``evaluate`` are the command lines, ``visualize`` draws detections.
"""
