"""Measure KID/FID feature extraction and the metrics themselves; prints one JSON object.

    python benchmarks/features.py                       # 32 images of 256 px, CPU
    python benchmarks/features.py --images 64 --device cuda --batch-size 32

The network is torch-fidelity's FID Inception-v3 with randomly initialised weights (the real ones need a
download; speed does not depend on the weight values), fed 256 px PNG files that it resizes to 299 px.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from ugatit_cli.evaluate.features import InceptionFeatures, folder_features, random_inception_weights  # noqa: E402
from ugatit_cli.evaluate.metrics import fid_from_features, kid_from_features  # noqa: E402


def write_images(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="side of the image files (the network sees 299)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        extractor = InceptionFeatures(random_inception_weights(tmp / "inception.pth"), device=args.device)
        write_images(tmp / "images", args.images, args.size)
        batch = torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), dtype=torch.uint8)
        extractor(batch[:1])  # build the network and warm up
        batches = max(1, args.images // args.batch_size)

        def forward():
            for _ in range(batches):
                extractor(batch)
            if extractor.device.type == "cuda":
                torch.cuda.synchronize()

        network_seconds, _ = timed(forward)
        options = dict(batch_size=args.batch_size, cache_dir=tmp / "cache", progress=False)
        folder_seconds, computed = timed(lambda: folder_features(tmp / "images", extractor, **options))
        cached_seconds, _ = timed(lambda: folder_features(tmp / "images", extractor, **options))

    rng = np.random.default_rng(0)
    real, fake = rng.random((1000, 2048)), rng.random((1000, 2048)) + 0.01
    kid_seconds, _ = timed(lambda: kid_from_features(real, fake))
    kid_small_seconds, _ = timed(lambda: kid_from_features(real[:100], fake[:100]))
    fid_seconds, _ = timed(lambda: fid_from_features(real, fake))
    print(json.dumps({
        "device": str(extractor.device),
        "torch_threads": torch.get_num_threads(),
        "image_size": args.size,
        "batch_size": args.batch_size,
        "network_images_per_s": round(batches * args.batch_size / network_seconds, 2),
        "folder_images_per_s": round(len(computed.features) / folder_seconds, 2),  # decode + network + cache write
        "cached_folder_seconds": round(cached_seconds, 4),
        "kid_100_subsets_of_1000_seconds": round(kid_seconds, 3),
        "kid_100_subsets_of_100_seconds": round(kid_small_seconds, 3),
        "fid_1000_images_seconds": round(fid_seconds, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
