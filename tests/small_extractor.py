"""A small real feature extractor for evaluation tests: the FID Inception network takes seconds per image on a CPU."""

import torch
from torch import nn


class SmallFeatures:
    """Two seeded convolutions and global average pooling: uint8 (B, 3, H, W) -> 16-d features. Counts its calls."""

    identity = "tests small-cnn 16 v1"

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        self.calls = 0
        self.images = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == 3
        self.calls += 1
        self.images += len(images)
        with torch.inference_mode():
            return self.net(images.float() / 127.5 - 1)
