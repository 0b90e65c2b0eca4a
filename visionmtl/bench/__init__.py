"""Side-by-side benchmark against torchvision's Mask R-CNN (the peer)."""

from visionmtl.bench.peer import (
    PeerTransform,
    build_peer_maskrcnn,
    evaluate_peer,
    instances_to_semantic,
    load_backbone_weights,
    peer_lr,
    timm_to_torchvision_mobilenet_v2,
    train_peer,
)

__all__ = [
    "PeerTransform",
    "build_peer_maskrcnn",
    "evaluate_peer",
    "instances_to_semantic",
    "load_backbone_weights",
    "peer_lr",
    "timm_to_torchvision_mobilenet_v2",
    "train_peer",
]
