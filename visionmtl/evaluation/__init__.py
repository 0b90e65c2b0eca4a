"""Evaluation: COCO box and mask AP (pycocotools), mIoU, the validation sets of a run, and metric
tables."""
