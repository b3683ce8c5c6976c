"""The hyper-parameters that define a U-GAT-IT network pair; they round-trip through ``config.json``."""

from dataclasses import asdict, dataclass, fields
from typing import Any

from ...core.safety import check_bool, check_int
from ...errors import UserError

#: Layer counts of the paper's discriminators (official PyTorch `n_layers`): 5 and 3 stride-2 convs.
PAPER_GLOBAL_DIS_LAYERS = 7
PAPER_LOCAL_DIS_LAYERS = 5
VARIANTS = ("pytorch", "tf")
#: Bounds of what a config.json may claim (far above any published U-GAT-IT: 256 px, ch 64, 4 blocks), so that
#: a hostile file cannot make us allocate or loop without end.
MAX_IMG_SIZE = 4096
MAX_CH = 1024
MAX_N_RES = 64
MAX_DIS_LAYERS = 16


def deepest_discriminator(img_size: int, wanted_layers: int) -> int:
    """The largest layer count <= ``wanted_layers`` whose final 4x4 convs still see a map >= 1 px.

    A discriminator with ``n`` layers halves the image ``n - 2`` times, then two 4x4 convs with padding 1
    each take one pixel off, so the map after the strided convs must be at least 3 px wide.
    """
    layers = wanted_layers
    while layers > 3:
        side = img_size
        for _ in range(layers - 2):
            side //= 2
        if side >= 3:
            return layers
        layers -= 1
    raise ValueError(f"images of {img_size} px are too small for any U-GAT-IT discriminator")


@dataclass
class UGATITConfig:
    """Architecture of one U-GAT-IT model (both generators and the four discriminators).

    ``variant`` selects the numerics of the official implementation the weights came from:
    ``pytorch`` (znxlwm/UGATIT-pytorch) or ``tf`` (taki0112/UGATIT, the pretrained selfie2anime release).
    ``dis_global_layers``/``dis_local_layers`` are lowered from the paper's 7/5 only when the image is too
    small for them; ``__post_init__`` does that and records it here, so the config says what was built.
    """

    img_size: int = 256
    ch: int = 64
    n_res: int = 4
    light: bool = False
    img_ch: int = 3
    variant: str = "pytorch"
    smoothing: bool = True  # TF variant only: AdaLIN uses clip(rho - 0.1, 0, 1)
    dis_global_layers: int = PAPER_GLOBAL_DIS_LAYERS
    dis_local_layers: int = PAPER_LOCAL_DIS_LAYERS

    def __post_init__(self) -> None:
        self.check_types_and_ranges()
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.img_size % 4 or self.img_size < 16:
            raise ValueError(f"img_size must be a multiple of 4 and at least 16, got {self.img_size}")
        if self.ch < 1 or self.n_res < 0:
            raise ValueError(f"ch must be >= 1 and n_res >= 0, got ch={self.ch}, n_res={self.n_res}")
        if self.variant == "tf" and self.n_res != 4:
            # The TF graph's gamma/beta MLP is ch * n_res wide and scales the ch * 4 bottleneck channels.
            raise ValueError(f"variant 'tf' needs n_res == 4 (the official TF graph cannot be built otherwise), "
                             f"got n_res={self.n_res}")
        self.dis_global_layers = deepest_discriminator(self.img_size, self.dis_global_layers)
        self.dis_local_layers = deepest_discriminator(self.img_size, self.dis_local_layers)

    def check_types_and_ranges(self) -> None:
        """Every field has its type and lies in a range a real model can have, before anything is sized by
        it (a config.json is read from files a user downloads). ValueError names the first bad field."""
        check_int("img_size", self.img_size, 16, MAX_IMG_SIZE)
        check_int("ch", self.ch, 1, MAX_CH)
        check_int("n_res", self.n_res, 0, MAX_N_RES)
        check_bool("light", self.light)
        check_int("img_ch", self.img_ch, 1, 4)
        check_bool("smoothing", self.smoothing)
        if not isinstance(self.variant, str):
            raise ValueError(f"variant must be a string, got {self.variant!r}")
        check_int("dis_global_layers", self.dis_global_layers, 4, MAX_DIS_LAYERS)
        check_int("dis_local_layers", self.dis_local_layers, 4, MAX_DIS_LAYERS)

    # --- the size rules ---

    @staticmethod
    def check_side(size: int) -> int:
        """A square side any U-GAT-IT generator can take: a multiple of 4 (the encoder halves it twice), 16 to
        ``MAX_IMG_SIZE`` (4096: a 4096 px image's activations already take ~40 GB at ch 64). Raises
        :class:`~ugatit_cli.errors.UserError` otherwise."""
        if size % 4 or not 16 <= size <= MAX_IMG_SIZE:
            raise UserError(f"size must be a multiple of 4 from 16 to {MAX_IMG_SIZE}, got {size}")
        return size

    def default_size(self) -> int:
        """The training size: what the model runs at unless told otherwise."""
        return self.img_size

    def check_size(self, size: int | None) -> int:
        """The side to run at: the training size by default; a full model's gamma/beta MLP is sized by it, so
        only it works; a light one pools first and runs at any side ``check_side`` accepts."""
        if size is None:
            return self.img_size
        self.check_side(size)
        if not self.light and size != self.img_size:
            raise UserError(f"size {size}: this full (non-light) model runs only at its training size "
                            f"{self.img_size} (its gamma/beta MLP is sized by it); leave the size out, or use a "
                            "light model")
        return size

    def dynamic_sides(self) -> bool:
        """Whether an export may leave height and width dynamic (light models: the MLP pools the map first)."""
        return self.light

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UGATITConfig":
        """Build from a ``config.json`` mapping; unknown keys are ignored so newer files still load.

        Raises ValueError for anything but a mapping of valid fields (see ``check_types_and_ranges``).
        """
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
