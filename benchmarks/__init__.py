"""Experiment drivers over visionmtl: the torchvision Mask R-CNN peer comparison, the multi-task
report and the mixed-precision check. Not installed and never imported by the package; see
``benchmarks/README.md``."""
