"""Does pix2pixHD learn real data? Held-out PSNR of label map -> photo on pairs cut from real photos.

    OMP_NUM_THREADS=1 python benchmarks/pix2pixhd_learn.py                       # ~10 min on one CPU thread
    python benchmarks/pix2pixhd_learn.py --iterations 300 --eval-every 50        # a quick look

Data: the colour photos that ship inside scikit-image (``astronaut``, ``coffee``, ``chelsea``, ``rocket``) and
scikit-learn (``china.jpg``, ``flower.jpg``), each scaled to 192 px high. Label maps: a k-means colour
clustering (``--label-nc`` clusters, fitted on training rows only) of each photo, its clusters numbered from
darkest to brightest (``--clustering shared``: one k-means over all photos, so an id means one colour
everywhere and the class mean is nearly the answer); instance maps: the photo's Felzenszwalb segments
(scikit-image). A class id thus says "the k-th brightest colour of this photo": which colour that is, the
generator has to infer from the label map's shapes, as a semantic class's appearance depends on context. The top
128 rows of each photo give the training pairs (64 px crops every 16 px), the bottom 64 rows the held-out
pairs (non-overlapping 64 px tiles): no held-out pixel is ever trained on. The dataset is written in the
official layout (``train_label/ train_img/ train_inst/ test_*``) and read back through the family's own data
code (``scan_dataset``, ``PairedBatches``).

Training: ``Pix2PixHDTrainer`` with the official losses (LSGAN + feature matching; the VGG loss is off
because its ImageNet weights cannot be downloaded here), a small generator (``--ngf``, 3 downsamplings,
3 residual blocks). Printed: the held-out PSNR (dB, mean over tiles) of the untrained generator, of a
copy-the-class-mean-colour baseline (each pixel gets the mean training colour of its class), and of the
generator every ``--eval-every`` iterations (the curve), then one JSON object.

Reading the numbers: with ``--clustering shared`` a class id nearly fixes the colour, so the class mean is
close to the best any per-pixel prediction can do in PSNR, while a GAN draws a sample of the colours a label
map allows: a sample from the right distribution has twice the squared error of the mean, 3 dB less PSNR.
The curve shows how fast the generator gets there from its untrained start.
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

from ugatit_cli.core.images import tensor_to_pixels  # noqa: E402
from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig, Pix2PixHDTrainConfig  # noqa: E402
from ugatit_cli.families.pix2pixhd.data import (  # noqa: E402
    PairedBatches,
    TransformParams,
    load_sample,
    scan_dataset,
)
from ugatit_cli.families.pix2pixhd.paired_metrics import psnr_ssim  # noqa: E402
from ugatit_cli.families.pix2pixhd.step import Pix2PixHDTrainer  # noqa: E402

HEIGHT, TILE, TRAIN_ROWS, STRIDE = 192, 64, 128, 16


def photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    found = {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")}
    found.update({name: load_sample_image(f"{name}.jpg") for name in ("china", "flower")})
    out = {}
    for name, pixels in found.items():
        img = Image.fromarray(pixels[..., :3])
        w = round(img.width * HEIGHT / img.height)
        out[name] = np.asarray(img.resize((w, HEIGHT), Image.Resampling.LANCZOS))
    return out


def colour_labels(pixels: np.ndarray, label_nc: int, seed: int, kmeans=None) -> np.ndarray:
    """Class ids of a photo's pixels: k-means colour clusters, fitted on its training rows unless a fitted
    ``kmeans`` is given; a photo's own clusters are numbered from darkest to brightest."""
    from sklearn.cluster import KMeans

    h, w, _ = pixels.shape
    flat = pixels.reshape(-1, 3).astype(np.float32)
    if kmeans is None:
        train = pixels[:TRAIN_ROWS].reshape(-1, 3).astype(np.float32)
        kmeans = KMeans(n_clusters=label_nc, n_init=4, random_state=seed).fit(train)
        rank = np.argsort(np.argsort(kmeans.cluster_centers_.sum(1)))  # cluster -> brightness rank
        return rank[kmeans.predict(flat)].reshape(h, w)
    return kmeans.predict(flat).reshape(h, w)


def build_dataset(root: Path, label_nc: int, seed: int, clustering: str = "per-photo") -> None:
    """Write the official layout under ``root``."""
    from skimage.segmentation import felzenszwalb
    from sklearn.cluster import KMeans

    images = photos()
    shared = None
    if clustering == "shared":
        train_pixels = np.concatenate([p[:TRAIN_ROWS].reshape(-1, 3) for p in images.values()]).astype(np.float32)
        sample = np.random.default_rng(seed).choice(len(train_pixels), 20000, replace=False)
        shared = KMeans(n_clusters=label_nc, n_init=4, random_state=seed).fit(train_pixels[sample])
    for folder in ("train_label", "train_img", "train_inst", "test_label", "test_img", "test_inst"):
        (root / folder).mkdir(parents=True)
    for name, pixels in images.items():
        h, w, _ = pixels.shape
        labels = colour_labels(pixels, label_nc, seed, shared)
        segments = felzenszwalb(pixels, scale=100, sigma=0.5, min_size=30)
        crops = [("train", y, x) for y in range(0, TRAIN_ROWS - TILE + 1, STRIDE)
                 for x in range(0, w - TILE + 1, STRIDE)]
        crops += [("test", TRAIN_ROWS, x) for x in range(0, w - TILE + 1, TILE)]
        for phase, y, x in crops:
            stem = f"{name}_{y:03d}_{x:03d}"
            window = (slice(y, y + TILE), slice(x, x + TILE))
            Image.fromarray(labels[window].astype(np.uint8), mode="L").save(root / f"{phase}_label" / f"{stem}.png")
            Image.fromarray(segments[window].astype(np.uint16)).save(root / f"{phase}_inst" / f"{stem}.png")
            Image.fromarray(pixels[window]).save(root / f"{phase}_img" / f"{stem}.png")


def scores(fake: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """(PSNR dB, SSIM) of two (1, 3, H, W) images in [-1, 1] as 8-bit files (the family's paired metrics)."""
    return psnr_ssim(tensor_to_pixels(fake[0]).numpy(), tensor_to_pixels(real[0]).numpy())


def held_out(train: Pix2PixHDTrainConfig, root: Path) -> list[dict[str, torch.Tensor]]:
    samples = scan_dataset(root, train.model, phase="test")
    keep = TransformParams((TILE, TILE), None, False)
    return [{k: v[None] for k, v in load_sample(train, s, keep).items()} for s in samples]


@torch.no_grad()
def evaluate(trainer: Pix2PixHDTrainer, tests) -> tuple[float, float]:
    pairs = [scores(trainer.sample(b)["generated"], b["image"]) for b in tests]
    return float(np.mean([p for p, _ in pairs])), float(np.mean([s for _, s in pairs]))


def class_mean_baseline(root: Path, train: Pix2PixHDTrainConfig, tests) -> tuple[float, float]:
    """Each pixel gets the mean training colour of its class (over all training pairs)."""
    nc = train.model.label_nc
    sums, counts = torch.zeros(nc, 3, dtype=torch.float64), torch.zeros(nc, dtype=torch.float64)
    keep = TransformParams((TILE, TILE), None, False)
    for s in scan_dataset(root, train.model, phase="train"):
        item = load_sample(train, s, keep)
        ids = item["label"].reshape(-1)
        sums.index_add_(0, ids, item["image"].reshape(3, -1).T.double())
        counts += torch.bincount(ids, minlength=nc).double()
    means = (sums / counts.clamp_min(1)[:, None]).float()
    pairs = [scores(means[b["label"][0, 0]].permute(2, 0, 1)[None], b["image"]) for b in tests]
    return float(np.mean([p for p, _ in pairs])), float(np.mean([s for _, s in pairs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-nc", type=int, default=8)
    parser.add_argument("--clustering", choices=("shared", "per-photo"), default="shared",
                        help="k-means per photo (ids ordered by brightness) or one k-means for all photos")
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = Pix2PixHDConfig(label_nc=args.label_nc, ngf=args.ngf, n_downsample_global=3, n_blocks_global=3)
    train = Pix2PixHDTrainConfig(model=model, ndf=args.ndf, no_vgg_loss=True, iterations=args.iterations,
                                 batch_size=args.batch_size, resize_or_crop="none", seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_dataset(root, args.label_nc, args.seed, args.clustering)
        samples = scan_dataset(root, model)
        tests = held_out(train, root)
        baseline = class_mean_baseline(root, train, tests)
        torch.manual_seed(args.seed)
        trainer = Pix2PixHDTrainer(train)
        batches = PairedBatches(train, samples)
        untrained = evaluate(trainer, tests)
        print(f"pairs: {len(samples)} training, {len(tests)} held-out; class-mean baseline {baseline[0]:.2f} dB "
              f"SSIM {baseline[1]:.3f}, untrained {untrained[0]:.2f} dB SSIM {untrained[1]:.3f}", flush=True)
        curve = [(0, untrained)]
        start = time.perf_counter()
        for it in range(args.iterations):
            losses = trainer.step(batches[it])
            if (it + 1) % args.eval_every == 0 or it + 1 == args.iterations:
                curve.append((it + 1, evaluate(trainer, tests)))
                print(f"iteration {it + 1:5d}  held-out PSNR {curve[-1][1][0]:.2f} dB SSIM {curve[-1][1][1]:.3f}  "
                      f"G_GAN {losses['G_GAN']:.3f} G_GAN_Feat {losses['G_GAN_Feat']:.3f} "
                      f"D {losses['d_loss']:.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    best = max(p for _, (p, _) in curve[1:])
    print(json.dumps({
        "benchmark": "pix2pixhd_learn", "label_nc": args.label_nc, "clustering": args.clustering,
        "ngf": args.ngf, "iterations": args.iterations,
        "batch_size": args.batch_size, "training_pairs": len(samples), "held_out_pairs": len(tests),
        "psnr_db": {"untrained": round(untrained[0], 2), "class_mean_baseline": round(baseline[0], 2),
                    "final": round(curve[-1][1][0], 2), "best": round(best, 2)},
        "ssim": {"untrained": round(untrained[1], 4), "class_mean_baseline": round(baseline[1], 4),
                 "final": round(curve[-1][1][1], 4)},
        "curve": [[i, round(p, 2), round(s, 4)] for i, (p, s) in curve],
        "seconds_training": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
