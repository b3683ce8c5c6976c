"""What ``--ema`` changes, on a small real dataset; prints one JSON object.

    python benchmarks/ema.py                      # ~14 minutes on one CPU core
    python benchmarks/ema.py --iterations 600     # a quick look

The data are real handwritten digits: scikit-learn's bundled copy of the UCI digits (8x8 scans, no download;
scikit-learn is needed only here). Domain A is the digit 0, domain B the digit 1; images are upscaled to 32
px. One run of the official recipe (batch 1, light, ch 16, lr decayed to 0 over the second half) with ``ema``
set trains exactly as without it: the average is a shadow copy that never feeds back. So one run gives both
sets of weights, and at every checkpoint both translate the held-out zeros; a logistic-regression digit
classifier, trained on the other digits of the set, says which share of the translations it reads as a 1
("lands in the target domain").
Reported: that share per checkpoint for the raw and the averaged generator, and how much it swings.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ugatit_cli.train import TrainConfig, Trainer  # noqa: E402

SIZE = 32


def to_tensor(digits: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) values 0..16 -> (N, 3, SIZE, SIZE) in [-1, 1], upscaled bilinearly like any image."""
    images = []
    for digit in digits:
        img = Image.fromarray((digit * 255 / 16).astype(np.uint8), mode="L").resize((SIZE, SIZE), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1))
    return torch.stack(images)[:, None].repeat(1, 3, 1, 1)


def to_digits(images: torch.Tensor) -> np.ndarray:
    """(N, 3, SIZE, SIZE) in [-1, 1] -> (N, 64) on the classifier's 0..16 scale (grey, area-downscaled)."""
    grey = (images.mean(1, keepdim=True) + 1) * 8
    return torch.nn.functional.adaptive_avg_pool2d(grey, 8).flatten(1).numpy()


def main() -> None:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--every", type=int, default=250, help="iterations between checkpoints")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny model: a second thread costs more than it gains

    digits = load_digits()
    rng = np.random.default_rng(args.seed)
    zeros, ones = np.flatnonzero(digits.target == 0), np.flatnonzero(digits.target == 1)
    rng.shuffle(zeros)
    rng.shuffle(ones)
    test_a = zeros[:60]  # held out from both the GAN and the classifier
    train_a, train_b = to_tensor(digits.images[zeros[60:]]), to_tensor(digits.images[ones[60:]])
    classifier_rows = np.setdiff1d(np.arange(len(digits.target)), test_a)
    classifier = LogisticRegression(max_iter=5000).fit(digits.data[classifier_rows], digits.target[classifier_rows])
    test_images = to_tensor(digits.images[test_a])

    config = TrainConfig(size=SIZE, ch=16, n_res=4, light=True, iterations=args.iterations, ema=args.ema,
                         seed=args.seed)
    torch.manual_seed(config.seed)
    trainer = Trainer(config)
    picker = torch.Generator().manual_seed(args.seed)

    def share_of_ones(generator: torch.nn.Module) -> float:
        with torch.no_grad():
            fake = generator.eval()(test_images)[0]
        generator.train()
        return float(np.mean(classifier.predict(to_digits(fake)) == 1))

    rows, start = [], time.perf_counter()
    for step in range(1, args.iterations + 1):
        a = train_a[torch.randint(len(train_a), (1,), generator=picker)]
        b = train_b[torch.randint(len(train_b), (1,), generator=picker)]
        if torch.rand(1, generator=picker) < 0.5:  # the official random horizontal flip
            a = a.flip(3)
        if torch.rand(1, generator=picker) < 0.5:
            b = b.flip(3)
        trainer.step(a, b)
        if step % args.every == 0:
            rows.append({"iteration": step, "raw": share_of_ones(trainer.nets["genA2B"]),
                         "ema": share_of_ones(trainer.ema["genA2B"])})
            print(json.dumps(rows[-1]), file=sys.stderr)

    def swing(values: list[float]) -> dict:
        steps = [abs(b - a) for a, b in zip(values[:-1], values[1:], strict=True)]
        return {"mean": round(statistics.mean(values), 3), "std": round(statistics.pstdev(values), 3),
                "min": min(values), "max": max(values), "mean_change_between_checkpoints": round(
                    statistics.mean(steps), 3) if steps else 0.0}

    second_half = rows[len(rows) // 2:]
    print(json.dumps({
        "data": f"sklearn digits: A = 0 ({len(train_a)} train), B = 1 ({len(train_b)} train), "
                f"{len(test_a)} held-out zeros translated A->B",
        "config": {"size": SIZE, "ch": config.ch, "n_res": config.n_res, "light": True, "batch_size": 1,
                   "iterations": args.iterations, "ema": args.ema},
        "seconds": round(time.perf_counter() - start, 1),
        "share_translated_to_target": rows,
        "second_half_raw": swing([r["raw"] for r in second_half]),
        "second_half_ema": swing([r["ema"] for r in second_half]),
    }, indent=2))


if __name__ == "__main__":
    main()
