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

Several processes (``torchrun``): facts of the official distributed run (clovaai/tunit ``main.py`` ``main_worker``,
``build_model``, ``get_loader``; ``train/train_unsupervised.py``; ``tools/ops.py``): one process per GPU (NCCL);
every network (C, C_EMA, D, G, G_EMA) is put in DistributedDataParallel, but the training loop calls G, C and
the EMA nets through ``.module`` (so DDP neither averages their gradients nor touches their buffers) and only
D through its wrapper; after the backward passes ``average_gradients`` all-reduces (sums, divides by the world size)
the gradients of C, of D and of G (D's wrapper also averages during the first of D's three backward calls;
the result is the ranks' mean either way); batch norm in the guiding network stays
``BatchNorm2d`` (no SyncBatchNorm: per-process batch statistics and running statistics); the queue is per
process: ``initialize_queue`` fills it from the process's first batch and each iteration appends that
process's own keys (no gathering across processes, unlike MoCo's); IIC and both contrastive losses use the
process's batch; ``--batch_size`` is divided by the number of GPUs (the total batch is the option); a
``DistributedSampler`` (with ``set_epoch``) shards each epoch; checkpoints are written by rank 0 only. The
EMA nets are updated on every process from identical weights. Here (:mod:`.step`) the same per-process
semantics, with DDP itself averaging the gradients, ``--batch-size`` per process (as for every family), each
rank's running statistics averaged after every iteration and every rank's queue kept in the checkpoint.

Licence note: the official generator, discriminator and block files are CC BY-NC(-SA) (from FUNIT and
StarGAN v2); this package copies nothing from them. Official pretrained checkpoints are trained with that code
and released for non-commercial use.
"""

from .family import FAMILY, TunitFamily  # noqa: E402

__all__ = ["FAMILY", "TunitFamily"]
