"""``ugatit train --arch tunit`` options: the official TUNIT recipe (clovaai/tunit ``main.py``,
``train/train_unsupervised.py``) as CLI flags.

Only dataclasses here (no torch): ``ugatit --help`` imports this to list the options. The run settings
(iterations, batch size, seed, EMA decay, checkpoints) are the shared ``RunConfig``'s; :meth:`TunitOptions.recipe`
combines both into the :class:`~ugatit_cli.families.tunit.config.TunitHyperParams` the trainer takes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..base import option
from .config import OFFICIAL_ITERATIONS, TunitConfig, TunitHyperParams

#: RunConfig defaults of TUNIT runs: the official 200 epochs of 1000 iterations at batch 32, EMA 0.999
RUN_DEFAULTS = {"iterations": OFFICIAL_ITERATIONS, "batch_size": 32, "ema": 0.999}
#: the official decay of G_EMA and C_EMA, used when a Python caller passes ema=None
OFFICIAL_EMA = 0.999


@dataclass
class TunitOptions:
    """TUNIT's hyper-parameters, official defaults (official argument names in the help where ours differ)."""

    size: int = option(128, help="Image size in pixels (official img_size).")
    k: int = option(10, flag="--k", help="Pseudo-domains the guiding network discovers (official output_k).")
    sty_dim: int = option(128, help="Length of the style code.")
    nf: int | None = option(None, help="Base width of the generator and discriminator.",
                            show_default="64 below 256 px, 32 from 256 px")
    n_res: int = option(2, help="Residual blocks.")
    p_semi: float = option(0.0, help="Share of labelled images (0: unsupervised; > 0 needs class subfolders).")
    warmup_iterations: int | None = option(None, help="First iterations that train the guiding network alone "
                                                      "(official: 65 of 200 epochs).",
                                           show_default="65/200 of --iterations")
    ema_start: int | None = option(None, help="Iteration at which G_EMA is reset to G and starts averaging.",
                                   show_default="warm-up + 1/200 of --iterations")
    epoch_iterations: int = option(1000, help="Iterations of an official epoch: C_EMA and G_EMA take the batch-norm "
                                              "statistics of C and G at the end of each (official iters).")
    queue_size: int = option(1024, help="Negatives of the contrastive style loss.")
    temperature: float = option(0.07, help="Temperature of the contrastive style loss.")
    w_iic: float = option(5.0, help="Weight of the IIC loss in the guiding loss.")
    w_guide_gan: float = option(0.1, help="Scale of the guiding loss once GAN training starts.")
    lr_c: float = option(1e-4, help="Adam learning rate of the guiding network.")
    weight_decay_c: float = option(1e-3, help="Adam weight decay of the guiding network.")
    w_adv: float = option(1.0, help="Weight of the adversarial losses.")
    w_rec: float = option(0.1, help="Weight of the L1 reconstruction loss.")
    w_vec: float = option(0.01, help="Weight of the generator's contrastive style loss.")
    w_gp: float = option(10.0, help="Weight of the R1 penalty.")
    lr_g: float = option(1e-4, help="RMSprop learning rate of the generator.")
    lr_d: float = option(1e-4, help="RMSprop learning rate of the discriminator.")
    weight_decay: float = option(1e-4, help="RMSprop weight decay of the generator and discriminator.")

    def model_config(self) -> TunitConfig:
        """The architecture these settings train; ValueError for values it rejects."""
        return TunitConfig(size=self.size, k=self.k, sty_dim=self.sty_dim, nf=self.nf, n_res=self.n_res)

    def recipe(self, run: Any) -> TunitHyperParams:
        """These settings with the run's iterations, batch size, seed and EMA decay; ValueError for values the
        recipe rejects (e.g. a batch of 1)."""
        mine = {f.name: getattr(self, f.name) for f in fields(self)}
        known = {f.name for f in fields(TunitHyperParams)}
        ema = run.ema if getattr(run, "ema", None) is not None else OFFICIAL_EMA
        return TunitHyperParams(**{k: v for k, v in mine.items() if k in known}, iterations=run.iterations,
                                batch_size=run.batch_size, seed=run.seed, ema_beta=ema)
