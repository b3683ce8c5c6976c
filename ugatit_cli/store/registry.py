"""Named pretrained models: what ``ugatit models`` lists and ``--model NAME`` resolves (cf. timm's cfgs)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..families.model_folder import UGATITModel
from ..families.ugatit.importers.tf_hub import HubTFCheckpoint

#: resolve(directions, revision) -> the model with those generators loaded
Resolver = Callable[[Sequence[str], str | None], UGATITModel]


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str
    origin: str  # where the weights come from, shown by `ugatit models`
    resolve: Resolver


#: The official TF release (taki0112/UGATIT): full model, 256 px, ch 64, 4 residual blocks, 1M iterations.
SELFIE2ANIME = HubTFCheckpoint(
    repo_id="hylee/UGATIT_model",
    folder="UGATIT_selfie2anime_lsgan_4resblock_6dis_1_1_10_10_1000_sn_smoothing",
    prefix="UGATIT.model-1000000",
)


MODELS: dict[str, RegisteredModel] = {
    "selfie2anime": RegisteredModel(
        name="selfie2anime",
        description="Official U-GAT-IT selfie->anime (full, 256 px, ch 64, 1M iterations); a2b = selfie->anime",
        origin=f"{SELFIE2ANIME.url} (official TensorFlow checkpoint; one generator fetched and converted on first use)",
        resolve=SELFIE2ANIME.resolve,
    ),
}
