"""Named pretrained models: what ``ugatit models`` lists and ``--model NAME`` resolves (cf. timm's cfgs)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import UserError
from .hub import UGATITModel

#: resolve(directions, revision) -> the model with those generators loaded
Resolver = Callable[[Sequence[str], str | None], UGATITModel]


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str
    origin: str  # where the weights come from, shown by `ugatit models`
    resolve: Resolver


def _selfie2anime_unavailable(directions: Sequence[str], revision: str | None) -> UGATITModel:
    raise UserError(
        "selfie2anime: the official weights are a TensorFlow checkpoint and this version of ugatit-cli "
        "cannot convert it yet; pass a model folder, Hub repo id or official PyTorch checkpoint instead"
    )


MODELS: dict[str, RegisteredModel] = {
    "selfie2anime": RegisteredModel(
        name="selfie2anime",
        description="Official U-GAT-IT selfie->anime (full, 256 px, ch 64, 1M iterations); a2b = selfie->anime",
        origin="hf://hylee/UGATIT_model (official TensorFlow checkpoint, converted on first use)",
        resolve=_selfie2anime_unavailable,
    ),
}
