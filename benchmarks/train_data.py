"""Throughput of the training data pipeline (decode, flip, resize, crop, batch); prints one JSON object.

    python benchmarks/train_data.py                       # 256 px JPEGs like selfie2anime, 0 and 2 workers
    python benchmarks/train_data.py --workers 0 4 8 --batch-size 8

Synthetic JPEG files (random smooth colours) stand in for a dataset; the scan (every image decoded once when a
run starts) and the loader's batch pairs per second are measured. Compare ``pairs_per_s`` with the training
iterations per second of ``benchmarks/train.py``: the loader must stay ahead of the GPU.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ugatit_cli.data.streams import TrainingStreams, training_loader  # noqa: E402
from ugatit_cli.families.ugatit.data import scan_training_data  # noqa: E402


def make_dataset(root: Path, images: int, side: int) -> None:
    rng = np.random.default_rng(0)
    for domain in ("trainA", "trainB"):
        (root / domain).mkdir(parents=True)
        for i in range(images):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)
            img.save(root / domain / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="images per domain")
    parser.add_argument("--side", type=int, default=256, help="side of the stored images")
    parser.add_argument("--size", type=int, default=256, help="training image size")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    result = {"images_per_domain": args.images, "stored_side": args.side, "size": args.size,
              "batch_size": args.batch_size, "iterations": args.iterations, "loaders": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_dataset(root, args.images, args.side)
        began = time.perf_counter()
        data = scan_training_data(root)
        result["scan_s_per_1000_images"] = round((time.perf_counter() - began) / (2 * args.images) * 1000, 3)
        streams = TrainingStreams(data.train, args.size, args.batch_size, seed=0)
        for workers in args.workers:
            loader = iter(training_loader(streams, 0, args.iterations + 10, workers))
            for _ in range(10):  # worker start-up and the first prefetch are not throughput
                next(loader)
            began = time.perf_counter()
            for _ in range(args.iterations):
                next(loader)
            seconds = time.perf_counter() - began
            result["loaders"].append({"workers": workers, "pairs_per_s": round(args.iterations / seconds, 2),
                                      "ms_per_pair": round(1000 * seconds / args.iterations, 3)})
            del loader
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
