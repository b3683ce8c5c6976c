"""``ugatit train --arch pix2pixhd`` options: the official option names and defaults as CLI flags.

Only dataclasses here (no torch): ``ugatit --help`` imports this to list the options. The run settings
(iterations, batch size, seed, EMA, precision, checkpoints) are the shared ``RunConfig``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import option
from .config import Pix2PixHDConfig, Pix2PixHDTrainConfig

#: RunConfig defaults for pix2pixHD runs (the official 512p run is 200 epochs of 2975 images at batch 1)
RUN_DEFAULTS = {"iterations": 200_000, "batch_size": 1}


@dataclass
class Pix2PixHDHyperParams:
    """pix2pixHD's training hyper-parameters, official names (NVIDIA/pix2pixHD ``options/*.py``) and defaults."""

    label_nc: int = option(35, help="Label classes (ids 0..label_nc-1 in the label maps); 0: the inputs are RGB "
                                    "images (train_A/ train_B/).")
    no_instance: bool = option(False, help="Train without instance maps (no train_inst/, no edge map).")
    netG: str = option("global", flag="--netG", help="global, or local (a local enhancer around a global "  # noqa: N815
                                                     "generator at twice the width; --ngf 32 as officially).")
    ngf: int = option(64, help="Generator filters in the first conv layer.")
    n_downsample_global: int = option(4, help="Stride-2 convs of the global generator.")
    n_blocks_global: int = option(9, help="Residual blocks of the global generator.")
    n_local_enhancers: int = option(1, help="Local enhancers (netG local).")
    n_blocks_local: int = option(3, help="Residual blocks of each local enhancer.")
    norm: str = option("instance", help="instance or batch normalisation.")
    instance_feat: bool = option(False, help="Add the encoder's instance-wise features to the generator's input.")
    label_feat: bool = option(False, help="Add the encoder's label-wise features to the generator's input.")
    feat_num: int = option(3, help="Length of the encoded feature vectors.")
    nef: int = option(16, help="Encoder filters in the first conv layer.")
    n_downsample_E: int = option(4, flag="--n-downsample-e", help="Stride-2 convs of the encoder.")  # noqa: N815
    num_D: int = option(2, flag="--num-d", help="Discriminators (image scales).")  # noqa: N815
    n_layers_D: int = option(3, flag="--n-layers-d", help="Stride-2 layers of each discriminator.")  # noqa: N815
    ndf: int = option(64, help="Discriminator filters in the first conv layer.")
    no_lsgan: bool = option(False, help="Binary cross-entropy GAN loss instead of least squares.")
    lambda_feat: float = option(10.0, help="Weight of the feature-matching and VGG losses.")
    no_ganFeat_loss: bool = option(False, flag="--no-ganfeat-loss",  # noqa: N815
                                   help="No discriminator feature-matching loss.")
    no_vgg_loss: bool = option(False, help="No VGG19 perceptual loss (no ImageNet weights needed).")
    vgg_weights: str | None = option(None, help="A local VGG19 state dict (torchvision layout, .pth or "
                                                ".safetensors) instead of torchvision's download.")
    lr: float = option(2e-4, help="Adam learning rate.")
    beta1: float = option(0.5, help="Adam beta1.")
    niter_decay: int | None = option(None, help="Iterations of linear learning-rate decay at the end "
                                                "(default: half of --iterations).", show_default="iterations / 2")
    niter_fix_global: int = option(0, help="First iterations that train only the local enhancer (netG local).")
    resize_or_crop: str = option("scale_width", help="Training transform: scale_width, resize_and_crop, crop, "
                                                     "scale_width_and_crop or none.")
    load_size: int = option(1024, help="Width (scale_width) or side (resize) images are scaled to.")
    fine_size: int = option(512, help="Side of the random crop (the *crop transforms).")
    no_flip: bool = option(False, help="No random horizontal flips.")

    def model_config(self) -> Pix2PixHDConfig:
        """The architecture these settings train; ValueError for values it rejects."""
        return Pix2PixHDConfig(
            label_nc=self.label_nc, netG=self.netG, ngf=self.ngf, n_downsample_global=self.n_downsample_global,
            n_blocks_global=self.n_blocks_global, n_local_enhancers=self.n_local_enhancers,
            n_blocks_local=self.n_blocks_local, norm=self.norm, no_instance=self.no_instance,
            instance_feat=self.instance_feat, label_feat=self.label_feat, feat_num=self.feat_num, nef=self.nef,
            n_downsample_E=self.n_downsample_E)

    def train_config(self, run: Any) -> Pix2PixHDTrainConfig:
        """Everything the trainer needs: these settings plus the run's iterations, batch size and seed."""
        return Pix2PixHDTrainConfig(
            model=self.model_config(), num_D=self.num_D, n_layers_D=self.n_layers_D, ndf=self.ndf,
            no_lsgan=self.no_lsgan, lambda_feat=self.lambda_feat, no_ganFeat_loss=self.no_ganFeat_loss,
            no_vgg_loss=self.no_vgg_loss, vgg_weights=self.vgg_weights, iterations=run.iterations,
            niter_decay=self.niter_decay, niter_fix_global=self.niter_fix_global, batch_size=run.batch_size,
            lr=self.lr, beta1=self.beta1, resize_or_crop=self.resize_or_crop, load_size=self.load_size,
            fine_size=self.fine_size, no_flip=self.no_flip, seed=run.seed)
