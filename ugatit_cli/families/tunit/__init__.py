"""TUNIT (Baek et al., "Rethinking the Truly Unsupervised Image-to-Image Translation", ICCV 2021; official code
clovaai/tunit): unsupervised multi-domain translation. A guiding network discovers K pseudo-domains and style
codes in a folder of unlabelled images; the generator translates an image into the style of a reference image
or of a domain's mean style code.

Modules (no torch import at package import time):

- ``config``: :class:`TunitConfig` (architecture, ``config.json``) and :class:`TunitHyperParams` (recipe);
- ``networks``: guiding network, generator, multi-task discriminator (official state_dict keys);
- ``losses``: IIC, MoCo-style contrastive loss and queue, hinge, R1, reconstruction; the IIC augmentation;
- ``step``: :class:`TunitTrainer` (one official iteration), per-domain mean style codes;
- ``cluster``: pseudo-domain assignment, Hungarian cluster accuracy;
- ``official``: official ``model_N.ckpt`` checkpoints;
- ``data``: the training folder and the seeded (plain, augmented) pairs;
- ``hyper``: the ``ugatit train --arch tunit`` options; ``training``: the trainer of the shared run, batches;
- ``inference``: translator, domain assigner, style codes, ONNX graphs; ``family``: :data:`FAMILY`.

Licence note: the official generator, discriminator and block files are CC BY-NC(-SA) (from FUNIT and
StarGAN v2); this package copies nothing from them. Official pretrained checkpoints are trained with that code
and released for non-commercial use.
"""

from .family import FAMILY, TunitFamily  # noqa: E402

__all__ = ["FAMILY", "TunitFamily"]
