"""Seconds per training iteration: ``Trainer.step`` against a step written the official way; prints one JSON object.

    python benchmarks/train.py                         # 128 px, ch 16, light, batch 1, CPU (the issue's target)
    python benchmarks/train.py --precision bf16 --compile
    python benchmarks/train.py --device cuda --size 256 --ch 64 --full
    python benchmarks/train.py --compile --warmup 3 --iterations 20 --rounds 1   # compile vs eager, break-even

With ``--compile`` a third variant, ``ours_eager`` (same settings without compiling), runs in the same
rounds, and the report gives ``compile`` facts: the steady-state speedup over eager, the extra warm-up
(compilation) time, and the number of iterations after which compiling has paid for itself.

The official way (znxlwm/UGATIT-pytorch ``UGATIT.train``): both generators run for the discriminator update
and its loss is back-propagated through them; the generator update runs them again, and the discriminators
collect weight gradients there. Same networks, same initial weights, same batches, same Adam settings.
Each variant runs in a fresh process (alternating, ``--rounds`` times) so that its peak memory is its own;
the reported time per iteration is the median over all timed iterations of that variant.
"""

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

VARIANTS = ("ours", "official_way", "ours_eager")


def official_way_step(trainer, real_a, real_b) -> None:
    """One official iteration on ``trainer``'s networks and optimisers (its ``lr`` is left constant)."""
    import torch

    from ugatit_cli.families.ugatit import clip_rho_, losses

    n, cfg = trainer.nets, trainer.config
    trainer.d_optim.zero_grad()
    fake_A2B, fake_B2A = n["genA2B"](real_a)[0], n["genB2A"](real_b)[0]  # not detached
    judged = {"GA": ("disGA", real_a, fake_B2A), "LA": ("disLA", real_a, fake_B2A),
              "GB": ("disGB", real_b, fake_A2B), "LB": ("disLB", real_b, fake_A2B)}
    real_out = {k: n[d](real)[:2] for k, (d, real, _) in judged.items()}
    fake_out = {k: n[d](fake)[:2] for k, (d, _, fake) in judged.items()}
    d_terms = losses.discriminator_terms(real_out, fake_out)
    losses.discriminator_loss(d_terms, cfg.adv_weight)["d_loss"].backward()
    trainer.d_optim.step()

    trainer.g_optim.zero_grad()
    fake_A2B, cam_A2B, _ = n["genA2B"](real_a)
    fake_B2A, cam_B2A, _ = n["genB2A"](real_b)
    images = {"fake_A2B2A": n["genB2A"](fake_A2B)[0], "fake_B2A2B": n["genA2B"](fake_B2A)[0]}
    images["fake_A2A"], cam_A2A, _ = n["genB2A"](real_a)
    images["fake_B2B"], cam_B2B, _ = n["genA2B"](real_b)
    judged = {"GA": ("disGA", fake_B2A), "LA": ("disLA", fake_B2A),
              "GB": ("disGB", fake_A2B), "LB": ("disLB", fake_A2B)}
    fake_out = {k: n[d](fake)[:2] for k, (d, fake) in judged.items()}  # D weights collect gradients too
    cams = {"fake_A2B": cam_A2B, "fake_B2A": cam_B2A, "fake_A2A": cam_A2A, "fake_B2B": cam_B2B}
    g_terms = losses.generator_terms(fake_out, real_a, real_b, images, cams)
    losses.generator_loss(g_terms, cfg.adv_weight, cfg.cycle_weight, cfg.identity_weight,
                          cfg.cam_weight)["g_loss"].backward()
    trainer.g_optim.step()
    for name in ("genA2B", "genB2A"):
        clip_rho_(n[name])
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)


def measure(args: argparse.Namespace) -> dict:
    """Run one variant in this process: warm-up iterations, then timed ones."""
    import torch

    from ugatit_cli.train import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(size=args.size, ch=args.ch, n_res=args.n_res, light=not args.full,
                         batch_size=args.batch_size, precision=args.precision, compile=args.compile)
    torch.manual_seed(0)
    trainer = Trainer(config, device=args.device)
    g = torch.Generator().manual_seed(1)
    data = [(torch.rand(args.batch_size, 3, args.size, args.size, generator=g) * 2 - 1,
             torch.rand(args.batch_size, 3, args.size, args.size, generator=g) * 2 - 1) for _ in range(4)]
    if args.variant == "official_way":
        data = [(a.to(trainer.device), b.to(trainer.device)) for a, b in data]
        step = lambda a, b: official_way_step(trainer, a, b)  # noqa: E731
    else:
        step = trainer.step
    cuda = trainer.device.type == "cuda"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    batches = itertools.cycle(data)
    start = time.perf_counter()
    for _ in range(args.warmup):
        step(*next(batches))
    warmup = time.perf_counter() - start  # includes compiling, with --compile
    if cuda:
        torch.cuda.synchronize(trainer.device)
        torch.cuda.reset_peak_memory_stats(trainer.device)
    times = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        step(*next(batches))  # ours returns floats: it has synchronised
        times.append(time.perf_counter() - start)
    result = {"times": times, "warmup_s": warmup, "threads": torch.get_num_threads(),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "rss_before_first_step_mib": round(rss_before, 1)}
    if cuda:
        result["peak_cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated(trainer.device) / 2**20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--ch", type=int, default=16)
    parser.add_argument("--n-res", type=int, default=4)
    parser.add_argument("--full", action="store_true", help="the full model instead of the light one")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="ours only; the official way always runs fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile (ours only)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: PyTorch's default)")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, alternating")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one measurement
    args = parser.parse_args()

    if args.variant:
        if args.variant == "official_way":
            args.precision, args.compile = "fp32", False
        if args.variant == "ours_eager":
            args.compile = False
        print(json.dumps(measure(args)))
        return

    variants = VARIANTS if args.compile else VARIANTS[:2]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{variant} failed:\n{out.stderr}")
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))

    report: dict = {"config": {"size": args.size, "ch": args.ch, "n_res": args.n_res, "light": not args.full,
                               "batch_size": args.batch_size, "device": args.device, "precision": args.precision,
                               "compile": args.compile, "threads": runs["ours"][0]["threads"],
                               "timed_iterations": args.iterations * args.rounds}}
    for variant, results in runs.items():
        times = [t for r in results for t in r["times"]]
        entry = {"s_per_iteration": round(statistics.median(times), 4), "min_s": round(min(times), 4),
                 "warmup_s": round(max(r["warmup_s"] for r in results), 1),
                 "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
                 "rss_before_first_step_mib": max(r["rss_before_first_step_mib"] for r in results)}
        if "peak_cuda_allocated_mib" in results[0]:
            entry["peak_cuda_allocated_mib"] = max(r["peak_cuda_allocated_mib"] for r in results)
        report[variant] = entry
    report["speedup"] = round(report["official_way"]["s_per_iteration"] / report["ours"]["s_per_iteration"], 2)
    if args.compile:
        eager, compiled = report["ours_eager"], report["ours"]
        report["speedup_eager_vs_official"] = round(
            report["official_way"]["s_per_iteration"] / eager["s_per_iteration"], 2)
        saved = eager["s_per_iteration"] - compiled["s_per_iteration"]
        # warm-up of both covers the same number of steps, so the difference is the compilation
        extra = compiled["warmup_s"] - eager["warmup_s"]
        report["compile"] = {
            "speedup_vs_eager": round(eager["s_per_iteration"] / compiled["s_per_iteration"], 2),
            "extra_warmup_s": round(extra, 1),
            "break_even_iterations": round(extra / saved) if saved > 0 else None,
        }
    report["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
