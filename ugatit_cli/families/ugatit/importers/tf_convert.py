"""Official TF U-GAT-IT generators (taki0112/UGATIT) -> our ``Generator`` with ``variant="tf"``.

The TF graph names its generators after the domain they produce: scope ``generator_B`` translates
A -> B (selfie -> anime) and ``generator_A`` B -> A. Each TF variable maps to one state_dict entry:

- conv kernels are HWIO and become OIHW; dense kernels are [in, out] and become [out, in];
- the full model's first MLP layer reads the bottleneck map flattened NHWC, as (h, w, c); ours flattens
  NCHW, as (c, h, w), so its input axis is permuted here once instead of transposing the map every call;
- instance-norm gamma/beta become ``InstanceNorm2d`` weight/bias; rho, gamma and beta of (Ada)LIN are
  reshaped to (1, C, 1, 1); the one CAM logit layer becomes ``cam_fc``.

Hyper-parameters come from tensor shapes; only AdaLIN ``smoothing`` (a graph option with no variable) is
read from the official folder name, and a light model's training size is not stored anywhere.
Discriminators and Adam slots in the checkpoint are never read.
"""

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from .... import __version__
from ....core.progress import byte_progress
from ....core.safety import check_tensors, meta_shapes
from ....errors import first_line
from ...model_folder import write_model_folder
from ..config import UGATITConfig
from ..family import DIRECTIONS, UGATITModel, check_direction
from ..networks import Generator
from .tf_checkpoint import TensorEntry, TFCheckpoint, TFCheckpointError, find_prefix, open_local_checkpoint

#: our direction -> the TF variable scope of the generator that performs it
TF_SCOPES = {"a2b": "generator_B", "b2a": "generator_A"}
DEFAULT_LIGHT_IMG_SIZE = 256  # the official training size; a light model's weights do not record it

# How each TF variable becomes a state_dict tensor.
CONV, DENSE, DENSE_FROM_NHWC, VECTOR, CHANNEL = "conv", "dense", "dense_from_nhwc", "vector", "channel"

_OFFICIAL_FOLDER = re.compile(r"^UGATIT(_light)?_.+_\d+resblock_\d+dis_")


def is_optimizer_slot(name: str) -> bool:
    """Adam's moment estimates are saved as ``<variable>/Adam`` and ``<variable>/Adam_1``."""
    return name.rsplit("/", 1)[-1].startswith("Adam")


def generator_tensor_names(entries: Mapping[str, TensorEntry], direction: str) -> list[str]:
    """The checkpoint names of one generator's weights (no optimizer slots)."""
    scope = TF_SCOPES[check_direction(direction)] + "/"
    return sorted(name for name in entries if name.startswith(scope) and not is_optimizer_slot(name))


def smoothing_from_folder_name(name: str) -> bool:
    """The official ``model_dir`` ends with ``_smoothing`` when AdaLIN smoothing was on; a folder named
    otherwise gets the official default (on), as in the selfie2anime release."""
    return name.endswith("_smoothing") or not _OFFICIAL_FOLDER.match(name)


def infer_tf_config(
    entries: Mapping[str, TensorEntry], direction: str, *, img_size: int | None = None, smoothing: bool = True,
    origin: str = "checkpoint",
) -> UGATITConfig:
    """ch, n_res, light, img_ch and (for full models) img_size from the generator's tensor shapes."""
    scope = TF_SCOPES[check_direction(direction)]
    try:
        first_conv = entries[f"{scope}/conv/conv2d/kernel"].shape  # [7, 7, img_ch, ch]
        mlp_in = entries[f"{scope}/MLP/linear_0/dense/kernel"].shape[0]
    except KeyError as exc:
        raise TFCheckpointError(f"{origin}: not an official U-GAT-IT TF checkpoint (no {exc.args[0]})") from None
    mlp_shape = entries[f"{scope}/MLP/linear_0/dense/kernel"].shape
    if len(first_conv) != 4 or len(mlp_shape) != 2 or min(first_conv) < 1:
        raise TFCheckpointError(f"{origin}: not an official U-GAT-IT TF checkpoint ({scope}/conv/conv2d/kernel has "
                                f"shape {list(first_conv)}, MLP input {list(mlp_shape)})")
    img_ch, ch = first_conv[2], first_conv[3]
    n_res = 0
    while f"{scope}/resblock_{n_res}/res1/conv_0/conv2d/kernel" in entries:
        n_res += 1
    dim = ch * 4
    light = mlp_in == dim
    if mlp_in < 1:
        raise TFCheckpointError(f"{origin}: MLP input width {mlp_in} is impossible")
    if light:
        size = img_size or DEFAULT_LIGHT_IMG_SIZE
    else:
        side = math.isqrt(mlp_in // dim)
        if side * side * dim != mlp_in:
            raise TFCheckpointError(f"{origin}: MLP input width {mlp_in} is not a square map of {dim} channels")
        size = side * 4
        if img_size is not None and img_size != size:
            raise TFCheckpointError(f"{origin}: this full model was trained at {size} px, not {img_size}")
    try:
        return UGATITConfig(img_size=size, ch=ch, n_res=n_res, light=light, img_ch=img_ch, variant="tf",
                            smoothing=smoothing)
    except ValueError as exc:
        raise TFCheckpointError(f"{origin}: unsupported generator ({exc})") from None


def tf_variable_map(config: UGATITConfig) -> dict[str, tuple[str, str]]:
    """TF variable name (inside the generator scope) -> (our state_dict key, how to convert it)."""
    names: dict[str, tuple[str, str]] = {}

    def conv(tf_name: str, key: str) -> None:
        names[f"{tf_name}/conv2d/kernel"] = (f"{key}.weight", CONV)
        names[f"{tf_name}/conv2d/bias"] = (f"{key}.bias", VECTOR)

    def dense(tf_name: str, key: str, kind: str = DENSE) -> None:
        names[f"{tf_name}/dense/kernel"] = (f"{key}.weight", kind)
        names[f"{tf_name}/dense/bias"] = (f"{key}.bias", VECTOR)

    def instance_norm(tf_name: str, key: str) -> None:
        names[f"{tf_name}/gamma"] = (f"{key}.weight", VECTOR)
        names[f"{tf_name}/beta"] = (f"{key}.bias", VECTOR)

    # DownBlock: [pad, conv, norm, relu] x 3, then the residual blocks (indices as built by Generator).
    conv("conv", "DownBlock.1")
    instance_norm("ins_norm", "DownBlock.2")
    for i in range(2):
        conv(f"conv_{i}", f"DownBlock.{5 + 4 * i}")
        instance_norm(f"ins_norm_{i}", f"DownBlock.{6 + 4 * i}")
    for i in range(config.n_res):
        block = f"DownBlock.{12 + i}.conv_block"
        for half, (conv_index, norm_index) in (("res1", (1, 2)), ("res2", (5, 6))):
            conv(f"resblock_{i}/{half}/conv_0", f"{block}.{conv_index}")
            instance_norm(f"resblock_{i}/{half}/instance_norm", f"{block}.{norm_index}")

    names["CAM_logit/kernel"] = ("cam_fc.weight", DENSE)
    names["CAM_logit/bias"] = ("cam_fc.bias", VECTOR)
    conv("conv_1x1", "conv1x1")
    dense("MLP/linear_0", "FC.0", DENSE if config.light else DENSE_FROM_NHWC)
    dense("MLP/linear_1", "FC.2")
    dense("MLP/gamma", "gamma")
    dense("MLP/beta", "beta")

    for i in range(config.n_res):
        for half, index in (("res1", 1), ("res2", 2)):
            conv(f"adaptive_resblock{i}/{half}/conv_0", f"UpBlock1_{i + 1}.conv{index}")
            names[f"adaptive_resblock{i}/{half}/instance_layer_norm/rho"] = (f"UpBlock1_{i + 1}.norm{index}.rho",
                                                                             CHANNEL)
    # UpBlock2: [upsample, pad, conv, LIN, relu] x 2, then [pad, conv, tanh].
    for i in range(2):
        conv(f"up_conv_{i}", f"UpBlock2.{2 + 5 * i}")
        for param in ("rho", "gamma", "beta"):
            names[f"layer_ins_norm_{i}/{param}"] = (f"UpBlock2.{3 + 5 * i}.{param}", CHANNEL)
    conv("G_logit", "UpBlock2.11")
    return names


def convert_tensor(tensor: torch.Tensor, kind: str, config: UGATITConfig) -> torch.Tensor:
    if kind == CONV:  # HWIO -> OIHW
        return tensor.permute(3, 2, 0, 1).contiguous()
    if kind == DENSE:  # [in, out] -> [out, in]
        return tensor.t().contiguous()
    if kind == DENSE_FROM_NHWC:  # [(h, w, c), out] -> [out, (c, h, w)]
        side, channels, out = config.img_size // 4, config.ch * 4, tensor.shape[1]
        return tensor.reshape(side, side, channels, out).permute(3, 2, 0, 1).reshape(out, -1).contiguous()
    if kind == CHANNEL:  # [C] -> (1, C, 1, 1)
        return tensor.reshape(1, -1, 1, 1)
    return tensor


def converted_shape(shape: tuple[int, ...], kind: str, config: UGATITConfig) -> tuple[int, ...] | None:
    """The shape ``convert_tensor`` gives a TF variable of ``shape`` (None when it cannot convert it)."""
    if kind == CONV:
        return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else None
    if kind in (DENSE, DENSE_FROM_NHWC):
        return (shape[1], shape[0]) if len(shape) == 2 else None
    if kind == CHANNEL:
        return (1, shape[0], 1, 1) if len(shape) == 1 else None
    return shape


def convert_generator(
    checkpoint: TFCheckpoint, direction: str, config: UGATITConfig, on_bytes: Callable[[int], None] | None = None,
    workers: int = 1,
) -> Generator:
    """Read one generator's tensors (and nothing else) and load them into a ``variant="tf"`` Generator.

    Each tensor is converted as soon as it is read and its raw copy dropped, so the peak memory is about
    the generator plus its largest tensor. ``workers`` parallel fetches suit remote sources.
    """
    scope = TF_SCOPES[check_direction(direction)] + "/"
    variables = tf_variable_map(config)
    present = {name[len(scope):] for name in generator_tensor_names(checkpoint.entries, direction)}
    missing, unexpected = sorted(set(variables) - present), sorted(present - set(variables))
    if missing or unexpected:
        what = f"missing {scope}{missing[0]}" if missing else f"unexpected {scope}{unexpected[0]}"
        raise TFCheckpointError(f"{checkpoint.origin}: not the official U-GAT-IT generator layout ({what})")
    # every variable's shape against the configuration's, before a byte is read or allocated
    needed = meta_shapes(lambda: Generator(config))
    for name, (key, kind) in variables.items():
        shape = converted_shape(checkpoint.entries[scope + name].shape, kind, config)
        if shape is None or tuple(shape) != tuple(needed[key]):
            raise TFCheckpointError(f"{checkpoint.origin}: {scope}{name} has shape "
                                    f"{list(checkpoint.entries[scope + name].shape)}, which does not fit the "
                                    f"generator its other tensors describe ({key} needs {list(needed[key])})")
    state = {}
    for name, tensor in checkpoint.iter_read((scope + n for n in sorted(present)), on_bytes, workers):
        key, kind = variables[name[len(scope):]]
        state[key] = convert_tensor(tensor.float(), kind, config)
        del tensor
    check_tensors(state, checkpoint.origin, error=TFCheckpointError)  # NaN/inf weights would translate to black
    with torch.device("meta"):  # no second copy of the weights: load_state_dict(assign=True) adopts ours
        generator = Generator(config)
    try:
        generator.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise TFCheckpointError(f"{checkpoint.origin}: generator shapes do not match ({first_line(exc)})") from None
    return generator.eval()


def convert_checkpoint(
    checkpoint: TFCheckpoint, directions: Sequence[str] = DIRECTIONS, *, img_size: int | None = None,
    smoothing: bool = True, on_bytes: Callable[[int], None] | None = None, workers: int = 1,
) -> UGATITModel:
    """The generators for ``directions`` of an opened TF checkpoint, as an in-memory ``UGATITModel``."""
    config = None
    generators = {}
    for direction in directions:
        config = infer_tf_config(checkpoint.entries, direction, img_size=img_size, smoothing=smoothing,
                                 origin=checkpoint.origin)
        generators[direction] = convert_generator(checkpoint, direction, config, on_bytes, workers)
    if config is None:
        raise ValueError("no direction to convert")
    return UGATITModel(config, generators)


def generators_nbytes(checkpoint: TFCheckpoint, directions: Sequence[str]) -> int:
    """Bytes of the checkpoint that converting ``directions`` reads."""
    return sum(checkpoint.nbytes(generator_tensor_names(checkpoint.entries, d)) for d in directions)


def load_tf_checkpoint(
    path: str | os.PathLike, directions: Sequence[str] = DIRECTIONS, *, img_size: int | None = None,
    smoothing: bool | None = None, show_progress: bool = True,
) -> UGATITModel:
    """Convert a local official TF checkpoint (its folder, ``.index`` file or prefix) in memory.

    ``smoothing=None`` reads it from the official folder name (see ``smoothing_from_folder_name``).
    """
    directions = tuple(check_direction(d) for d in directions)
    checkpoint = open_local_checkpoint(path)
    if smoothing is None:
        smoothing = smoothing_from_folder_name(Path(checkpoint.origin).parent.resolve().name)
    total = generators_nbytes(checkpoint, directions)
    with byte_progress(f"reading {Path(checkpoint.origin).name}", total, enabled=show_progress) as advance:
        model = convert_checkpoint(checkpoint, directions, img_size=img_size, smoothing=smoothing, on_bytes=advance)
    prefix = Path(checkpoint.origin)
    model.card["source"] = conversion_note(f"`{prefix.name}` in `{prefix.parent.name}`", directions)
    if model.config.light and img_size is None:
        from ..family import assume_training_size

        assume_training_size(model, str(prefix))
    return model


def convert_tf_checkpoint(
    path: str | os.PathLike, output_dir: str | os.PathLike, directions: Sequence[str] = DIRECTIONS, *,
    overwrite: bool = False, img_size: int | None = None, smoothing: bool | None = None, show_progress: bool = True,
) -> Path:
    """Convert a local official TF checkpoint into a model folder at ``output_dir`` (written atomically)."""
    prefix = find_prefix(path)
    model = load_tf_checkpoint(prefix, directions, img_size=img_size, smoothing=smoothing,
                               show_progress=show_progress)
    return write_model_folder(model, output_dir, overwrite=overwrite, title=f"U-GAT-IT {prefix.parent.name}")


def conversion_note(what: str, directions: Sequence[str]) -> str:
    """The model card's origin paragraph for a converted TF checkpoint."""
    scopes = ", ".join(f"`{TF_SCOPES[d]}` as {d}" for d in directions)
    return (f"Converted by ugatit-cli {__version__} from the official TensorFlow U-GAT-IT checkpoint {what} "
            f"(taki0112/UGATIT; generator scopes {scopes}). The architecture is the TF variant "
            f"(`variant: tf` in `config.json`), which reproduces the TF graph's outputs.")
