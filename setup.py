"""Package definition for visionmtl."""

from setuptools import find_packages, setup

setup(
    name="visionmtl",
    version="0.1.0",
    description="Multi-task computer vision: detection + semantic segmentation on one shared network",
    packages=find_packages(include=["visionmtl", "visionmtl.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.6",
        "torchvision>=0.21",  # draw_bounding_boxes(fill_labels=)
        "timm>=0.9",
        "albumentations>=2.0",
        "pycocotools>=2.0.7",
        "pydantic>=2.7",  # config validation (pydantic.dataclasses, Strict)
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "numpy",
        "pillow",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff>=0.4", "hypothesis>=6"],
        # The peers of benchmarks/ (not used by the library): smp's FPN for semantic_benchmark.py.
        "bench": ["segmentation-models-pytorch>=0.3"],
        # train.loggers: [tensorboard] (torch.utils.tensorboard writes through it).
        "tensorboard": ["tensorboard>=2.14"],
        # visionmtl plot (training curves).
        "plots": ["matplotlib>=3.7"],
        # eval.coco_engine: faster_coco_eval (pycocotools stays the reference engine).
        "fasteval": ["faster-coco-eval>=1.6"],
        # visionmtl export --format onnx and OnnxPredictor. The graphs come from torch's
        # TorchScript-based exporter, which needs onnx only (onnxscript, which the newer
        # dynamo=True exporter needs, is not used: see visionmtl/api/onnx_export.py for why).
        "export": ["onnx>=1.16", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": ["visionmtl = visionmtl.commands:main"]},
)
