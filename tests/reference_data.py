"""The tiny training run behind tests/fixtures/reference (see make_reference.py there)."""

from pathlib import Path

import numpy as np
from PIL import Image

#: a light 32 px U-GAT-IT with 4 base channels, three iterations, one image per domain per batch
SETTINGS = {"size": 32, "ch": 4, "n_res": 1, "light": True, "iterations": 3, "workers": 0, "log_every": 1,
            "save_every": 3, "sample_every": 1000, "seed": 3, "decay": True}


def make_data(root: Path) -> Path:
    """trainA/ trainB/ (4 images each) and testA/ testB/ (1 each) of seeded noise with a colour cast."""
    rng = np.random.default_rng(2024)
    for folder, count, cast in (("trainA", 4, (40, 0, 0)), ("trainB", 4, (0, 0, 40)), ("testA", 1, (40, 0, 0)),
                                ("testB", 1, (0, 0, 40))):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 216, (36, 40 + 2 * i, 3), dtype=np.uint8) + np.array(cast, dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{i:02d}.png")
    return root
