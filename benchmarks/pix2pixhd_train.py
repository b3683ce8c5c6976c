"""Seconds per pix2pixHD training iteration: ``Pix2PixHDTrainer.step`` against a step written the official way.

    OMP_NUM_THREADS=1 python benchmarks/pix2pixhd_train.py                 # 64 px, official architecture
    python benchmarks/pix2pixhd_train.py --size 128 --ngf 32 --iterations 6

The official way (NVIDIA/pix2pixHD ``train.py`` + ``Pix2PixHDModel.forward``), as re-stated in
``tests/pix2pixhd_reference.py``: ``nn.InstanceNorm2d`` modules, three discriminator passes (detached fake, real,
fake with graph), the generator loss back-propagated into G and D, G's step, then D's loss and step. Same
initial weights, same batches, same Adam settings, same VGG19 weights (random ones of the real layout: the
cost is the same and no download is needed). Prints one JSON object: median seconds per iteration of each
variant, the speed-up, the largest relative difference between the two variants' loss terms at the
first iteration (they start from the same weights), and the generator's images per second at
``--translate-size`` (ours against the official modules; translation is that forward pass).

The official way's Adam is ``torch.optim.Adam``'s default implementation, as the official code constructs it
(on the CPU: one parameter at a time); ours is the fused kernel.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from pix2pixhd_reference import RefGlobal, RefMultiscaleD, RefVgg19, official_step  # noqa: E402

from ugatit_cli.families.pix2pixhd.config import Pix2PixHDConfig, Pix2PixHDTrainConfig  # noqa: E402
from ugatit_cli.families.pix2pixhd.losses import VGG19Features  # noqa: E402
from ugatit_cli.families.pix2pixhd.step import LOSS_NAMES, Pix2PixHDTrainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--label-nc", type=int, default=35)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--n-blocks-global", type=int, default=9)
    parser.add_argument("--num-d", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--no-vgg-loss", action="store_true")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per variant and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--translate-size", type=int, default=256, help="side of the generator-only timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = Pix2PixHDConfig(label_nc=args.label_nc, ngf=args.ngf, n_blocks_global=args.n_blocks_global)
    torch.manual_seed(0)
    vgg = None if args.no_vgg_loss else VGG19Features()
    if vgg is not None:
        for m in vgg.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, 0.0, (2.0 / (9 * m.in_channels)) ** 0.5)
    cfg = Pix2PixHDTrainConfig(model=model, num_D=args.num_d, no_vgg_loss=args.no_vgg_loss,
                               iterations=10**6, batch_size=args.batch_size)
    trainer = Pix2PixHDTrainer(cfg, vgg=vgg)
    ref_g = RefGlobal(model.netG_input_nc, 3, model.ngf, model.n_downsample_global, model.n_blocks_global)
    ref_d = RefMultiscaleD(model.label_nc + 1 + 3, cfg.ndf, cfg.n_layers_D, num_D=cfg.num_D)
    ref_g.load_state_dict(trainer.nets["netG"].state_dict())
    ref_d.load_state_dict(trainer.nets["netD"].state_dict())
    ref_vgg = None if vgg is None else RefVgg19(vgg.features.state_dict())
    opt_g = torch.optim.Adam(ref_g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(ref_d.parameters(), lr=cfg.lr, betas=(0.5, 0.999))

    g = torch.Generator().manual_seed(1)
    n = args.batch_size
    label = torch.randint(0, model.label_nc, (n, 1, args.size, args.size), generator=g)
    batch = {"label": label, "inst": label * 1000 + torch.randint(0, 3, label.shape, generator=g),
             "image": torch.rand(n, 3, args.size, args.size, generator=g) * 2 - 1}

    ours_first = trainer.step(batch)  # also the warm-up
    theirs_first = official_step(ref_g, ref_d, opt_g, opt_d, ref_vgg, batch, model.label_nc, cfg.n_layers_D,
                                 cfg.num_D, cfg.lambda_feat)
    diff = max(abs(ours_first[k] - theirs_first[k]) / max(abs(theirs_first[k]), 1e-12) for k in LOSS_NAMES)

    times = {"ours": [], "official_way": []}
    for _ in range(args.rounds):
        for _ in range(args.iterations):
            t = time.perf_counter()
            trainer.step(batch)
            times["ours"].append(time.perf_counter() - t)
        for _ in range(args.iterations):
            t = time.perf_counter()
            official_step(ref_g, ref_d, opt_g, opt_d, ref_vgg, batch, model.label_nc, cfg.n_layers_D, cfg.num_D,
                          cfg.lambda_feat)
            times["official_way"].append(time.perf_counter() - t)
    ours, official = statistics.median(times["ours"]), statistics.median(times["official_way"])

    # translation: the generator's forward pass at --translate-size, ours against the official modules
    side = args.translate_size
    x = torch.randn(1, model.netG_input_nc, side, side)
    net_g, ref_g = trainer.nets["netG"].eval(), ref_g.eval()
    per_image = {"ours": [], "official_way": []}
    with torch.no_grad():
        for net in (net_g, ref_g):  # warm-up
            net(x)
        for _ in range(args.rounds * 2):
            for name, net in (("ours", net_g), ("official_way", ref_g)):
                t = time.perf_counter()
                net(x)
                per_image[name].append(time.perf_counter() - t)
    translate = {k: round(1.0 / statistics.median(v), 3) for k, v in per_image.items()}
    print(json.dumps({
        "benchmark": "pix2pixhd_train_step",
        "device": "cpu", "threads": args.threads, "size": args.size, "batch_size": n, "label_nc": model.label_nc,
        "ngf": model.ngf, "n_blocks_global": model.n_blocks_global, "num_D": cfg.num_D,
        "vgg_loss": not args.no_vgg_loss, "timed_iterations": len(times["ours"]),
        "seconds_per_iteration": {"ours": round(ours, 4), "official_way": round(official, 4)},
        "speedup": round(official / ours, 3),
        "first_step_loss_terms_max_rel_diff": diff,
        "translate_size": side,
        "translate_images_per_second": translate,
        "translate_speedup": round(translate["ours"] / translate["official_way"], 3),
    }))


if __name__ == "__main__":
    main()
