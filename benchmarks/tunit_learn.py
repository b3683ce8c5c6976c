"""Does TUNIT learn real data without labels? scikit-learn's handwritten digits (1797 images, 8x8, 10 classes),
upscaled to 32 px, trained on the CPU with the official recipe (official networks at 32 px, K = 10, official
losses, optimisers and augmentation); the labels are hidden from training and used only to score:

- cluster accuracy: pseudo-domain (argmax of the guiding network) matched one-to-one to the digit classes
  (Hungarian), as the official evaluation (chance ~0.1-0.15);
- reference accuracy: the share of translations G(x, C.style(ref)) that a logistic regression trained on the
  real images reads as the reference's digit (chance 0.1), and, for context, as the source's digit.

The official schedule (warm-up 65/200 of the run, EMA 0.999) is kept in proportion to ``--iterations``. With
a run this short the EMA copies still mostly hold their initial weights, so the training nets (C, G; the
official cluster evaluation also uses C) give the headline numbers and the EMA nets are reported beside them.

    OMP_NUM_THREADS=1 python benchmarks/tunit_learn.py --iterations 400 --json out.json

Prints one JSON object: settings, seconds, the curve (one point per ``--eval-every``) and the final numbers.

Recipe settings that differ from the official ones are listed in the output under ``not_official``. What
this gives on the CPU, and why a budget of a few hundred iterations is not enough for the official recipe
(warm-up of 65,000 iterations), is recorded in README "TUNIT: measured learning".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ugatit_cli.families.tunit.cluster import assign, cluster_accuracy
from ugatit_cli.families.tunit.config import TunitHyperParams
from ugatit_cli.families.tunit.losses import iic_augmentation
from ugatit_cli.families.tunit.step import TunitTrainer

SIZE = 32


def load_digits_32():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # N x 1 x 8 x 8 in [0, 1]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)
    uint8 = (x * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)  # N x 3 x 32 x 32, as decoded images are
    return uint8, digits.target


def to_model(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1.0


class Batches:
    """Endless shuffled batches of (plain view, IIC view), as the official loader; ``flip=False`` leaves the
    random horizontal flips out of both views. :meth:`state_dict` / :meth:`load_state_dict` resume the
    stream exactly (the epoch's order, the position in it, and the generators the views draw from)."""

    def __init__(self, u8: torch.Tensor, batch_size: int, seed: int, flip: bool = True):
        self.u8, self.batch_size, self.flip = u8, batch_size, flip
        self.augment = iic_augmentation(SIZE, flip=flip)
        self.g = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(u8), generator=self.g)
        self.pos = 0

    def __next__(self):
        if self.pos + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.u8), generator=self.g)
            self.pos = 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        plain = self.u8[idx]
        if self.flip:
            flipped = torch.rand(len(idx), generator=self.g) < 0.5
            plain = torch.where(flipped[:, None, None, None], plain.flip(3), plain)
        tf = torch.stack([self.augment(img) for img in self.u8[idx]])  # torchvision draws from torch's generator
        return to_model(plain), tf

    def state_dict(self) -> dict:
        return {"g": self.g.get_state(), "order": self.order, "pos": self.pos, "torch": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.g.set_state(state["g"])
        self.order, self.pos = state["order"], state["pos"]
        torch.set_rng_state(state["torch"])


@torch.no_grad()
def evaluate(trainer: TunitTrainer, u8: torch.Tensor, labels: np.ndarray, classifier, pairs: int, seed: int):
    x_all = to_model(u8)
    out = {}
    for name in ("C", "C_EMA"):
        net = trainer.nets[name]
        mode = net.training
        net.eval()
        domains, _ = assign(net, x_all, batch_size=256)
        net.train(mode)
        acc = cluster_accuracy(domains.numpy(), labels, k=trainer.config.k, n_classes=10)
        out[f"cluster_accuracy_{name}"] = round(acc.accuracy, 4)
        if name == "C":
            out["cluster_sizes"] = np.bincount(domains.numpy(), minlength=trainer.config.k).tolist()
    if trainer.gan_phase:
        g = torch.Generator().manual_seed(seed)
        src = torch.randint(len(u8), (pairs,), generator=g)
        ref = torch.randint(len(u8), (pairs,), generator=g)
        for g_name, c_name in (("G", "C"), ("G_EMA", "C_EMA")):
            G, C = trainer.nets[g_name], trainer.nets[c_name]
            modes = G.training, C.training
            G.eval()
            C.eval()
            fake = torch.cat([G(x_all[s], C.style(x_all[r])) for s, r in zip(src.split(100), ref.split(100),
                                                                                  strict=True)])
            G.train(modes[0])
            C.train(modes[1])
            pred = classifier.predict(features(fake))
            out[f"reference_accuracy_{g_name}"] = round(float((pred == labels[ref.numpy()]).mean()), 4)
            out[f"source_accuracy_{g_name}"] = round(float((pred == labels[src.numpy()]).mean()), 4)
    return out


def features(x: torch.Tensor) -> np.ndarray:
    """Grey 16 x 16 pixels in [0, 1] (the classifier's input, for real and translated images alike)."""
    grey = (x.float().mean(1, keepdim=True) + 1) / 2
    return F.adaptive_avg_pool2d(grey, 16).flatten(1).numpy()


def not_official(args, hyper: TunitHyperParams, trainer: TunitTrainer) -> list[str]:
    """The recipe settings of this run that differ from the official ones (the family's defaults)."""
    official = TunitHyperParams(size=SIZE, k=10, iterations=args.iterations)
    changes = [f"{name} {getattr(hyper, name)} (official {getattr(official, name)})"
               for name in ("batch_size", "lr_c", "weight_decay_c", "lr_g", "lr_d", "w_iic", "w_vec", "w_rec",
                            "ema_beta")
               if getattr(hyper, name) != getattr(official, name)]
    if hyper.warmup != official.warmup or hyper.ema_from != official.ema_from:
        changes.append(f"warm-up {hyper.warmup} of {args.iterations} iterations, G_EMA from {hyper.ema_from} "
                       f"(official {official.warmup}, {official.ema_from}: 65/200 and 66/200 of the run)")
    if trainer.config.width != official.model_config().width:
        changes.append(f"nf {trainer.config.width} (official {official.model_config().width} at {SIZE} px)")
    if not args.flip:
        changes.append("no horizontal flips (official: random flips in both views)")
    return changes


def save_state(path: Path, state: dict) -> None:
    """``torch.save`` under a temporary name, then rename: an interrupted save keeps the previous state."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default: official 65/200)")
    parser.add_argument("--nf", type=int, default=None, help="G/D base width (default: official 64 at 32 px)")
    parser.add_argument("--lr-c", type=float, default=1e-4, help="guiding network's Adam lr (official 1e-4)")
    parser.add_argument("--lr-gd", type=float, default=1e-4, help="G and D RMSprop lr (official 1e-4)")
    parser.add_argument("--weight-decay-c", type=float, default=1e-3,
                        help="guiding network's Adam weight decay (official 1e-3)")
    parser.add_argument("--w-iic", type=float, default=5.0, help="IIC weight in C's loss (official 5)")
    parser.add_argument("--w-vec", type=float, default=0.01, help="G's style contrastive weight (official 0.01)")
    parser.add_argument("--w-rec", type=float, default=0.1, help="G's reconstruction weight (official 0.1)")
    parser.add_argument("--ema-beta", type=float, default=0.999,
                        help="C_EMA / G_EMA moving-average rate (official 0.999: a time constant of 1000 iterations)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                        help="random horizontal flips in both views (official: on; a mirrored digit is another "
                             "shape, so --no-flip suits digits)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--state", default=None,
                        help="resumable run: after every evaluation the run (networks, optimisers, queue, data "
                             "stream, random generators and the curve so far) is saved here; started again with "
                             "the same arguments, it goes on from there exactly")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.linear_model import LogisticRegression

    u8, labels = load_digits_32()
    classifier = LogisticRegression(max_iter=2000).fit(features(to_model(u8)), labels)
    classifier_train_accuracy = float(classifier.score(features(to_model(u8)), labels))

    torch.manual_seed(args.seed)
    hyper = TunitHyperParams(size=SIZE, k=10, iterations=args.iterations, batch_size=args.batch_size,
                             seed=args.seed, nf=args.nf, warmup_iterations=args.warmup,
                             ema_start=args.warmup, lr_c=args.lr_c, lr_g=args.lr_gd, lr_d=args.lr_gd,
                             w_vec=args.w_vec, w_rec=args.w_rec, ema_beta=args.ema_beta,
                             w_iic=args.w_iic, weight_decay_c=args.weight_decay_c)
    trainer = TunitTrainer(hyper)
    data = Batches(u8, args.batch_size, args.seed, flip=args.flip)
    curve: list[dict] = []
    done, train_seconds = 0, 0.0
    state_path = Path(args.state) if args.state else None
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, weights_only=True)
        free = {"iterations", "json", "state", "threads"}  # may change between sessions (threads: not bit-exact)
        if {k: v for k, v in saved["args"].items() if k not in free} != {k: v for k, v in vars(args).items()
                                                                         if k not in free}:
            raise SystemExit(f"{state_path}: saved by a run with other arguments ({saved['args']})")
        trainer.load_state_dict(saved["trainer"])
        data.load_state_dict(saved["data"])
        curve, done, train_seconds = json.loads(saved["curve"]), saved["done"], saved["train_seconds"]
        print(f"resumed from {state_path} at iteration {done}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    losses: dict[str, list[float]] = {}
    for it in range(done + 1, args.iterations + 1):
        x_org, x_tf = next(data)
        for key, value in trainer.step(x_org, x_tf).items():
            losses.setdefault(key, []).append(value)
        if it % args.eval_every == 0 or it == args.iterations:
            train_seconds += time.perf_counter() - start
            point = {"iteration": it, "phase": "gan" if it > hyper.warmup else "warmup",
                     "train_seconds": round(train_seconds, 1),
                     **{k: round(float(np.mean(v)), 4) for k, v in losses.items()},
                     "train_cluster_sizes": trainer.pop_cluster_sizes(),
                     **evaluate(trainer, u8, labels, classifier, args.pairs, args.seed)}
            losses.clear()
            curve.append(point)
            print(json.dumps(point), flush=True)
            if state_path is not None:
                save_state(state_path, {"args": vars(args), "trainer": trainer.state_dict(),
                                        "data": data.state_dict(), "curve": json.dumps(curve), "done": it,
                                        "train_seconds": train_seconds})
            start = time.perf_counter()
    result = {
        "benchmark": "tunit_learn",
        "data": "sklearn digits, 1797 images 8x8 -> 32 px, 10 hidden classes",
        "settings": {"iterations": args.iterations, "batch_size": args.batch_size, "k": 10, "size": SIZE,
                     "warmup_iterations": hyper.warmup, "ema_start": hyper.ema_from,
                     "nf": trainer.config.width, "lr_c": hyper.lr_c, "lr_g": hyper.lr_g, "lr_d": hyper.lr_d,
                     "w_vec": hyper.w_vec, "w_rec": hyper.w_rec, "ema_beta": hyper.ema_beta,
                     "w_iic": hyper.w_iic, "weight_decay_c": hyper.weight_decay_c, "flip": args.flip,
                     "threads": args.threads, "seed": args.seed},
        "not_official": not_official(args, hyper, trainer),
        "chance": {"cluster_accuracy": "about 0.1-0.15 (best matching of random labels)",
                   "reference_accuracy": 0.1},
        "classifier_accuracy_on_real": round(classifier_train_accuracy, 4),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_iteration": round(train_seconds / args.iterations, 3),
        "final": curve[-1],
        "curve": curve,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
