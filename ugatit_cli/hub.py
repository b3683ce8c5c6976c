"""The model folder format and the Hugging Face Hub, through huggingface_hub's ``ModelHubMixin``.

A model folder is ``config.json`` + one safetensors file per generator direction + a ``README.md`` model
card. One file per direction lets a user who translates selfies to anime download only that generator
(~1.1 GB for the full 256 px model). Download, cache, revisions, offline mode and upload are
huggingface_hub's own.

``config.json`` holds the architecture (``UGATITConfig``) plus ``weights_dtype``, the dtype the weights are
stored in (``float32``, or ``float16`` for half-size exports); each safetensors file records it in its
metadata too. Loading always casts back to float32. Readers ignore keys they do not know.
"""

import copy
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ProcessingError, UserError
from .model import Generator, UGATITConfig
from .safety import (
    check_replaceable,
    check_tensors,
    honour_umask,
    meta_shapes,
    read_json_object,
    regular_file,
    shape_mismatch,
    strip_wrapper_prefixes,
    temp_prefix,
)

DIRECTIONS = ("a2b", "b2a")
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def weights_name(direction: str) -> str:
    return f"generator_{direction}.safetensors"


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}; expected a2b or b2a")
    return direction


MODEL_CARD = """---
{{ card_data }}
---

# {{ title }}

A [U-GAT-IT](https://arxiv.org/abs/1907.10830) image-to-image translation model exported by
[ugatit-cli](https://pypi.org/project/ugatit-cli/) {{ version }}{% if onnx %} to ONNX{% endif %}.

## Files

| file | contents |
| --- | --- |
| `config.json` | the architecture (below){% if onnx %} and the ONNX export settings{% endif %} |
{% for name, what in files.items() %}| `{{ name }}` | {{ what }} |
{% endfor %}
Weights are stored in **{{ weights_dtype }}**{% if weights_dtype != "float32" %} (half the size of float32);
{% if onnx %}each weight is cast to float32 inside the graph, so the model computes in float32{% else %}loading
casts them back to float32{% endif %}{% endif %}.
Discriminators and optimizer state are not included.

## Use
{% if onnx %}
Each file is one generator, ONNX opset {{ onnx.opset }}: input `input`, float32 `B x 3 x H x W` in [-1, 1];
outputs `image` (same shape, in [-1, 1]), `cam_logit` (`B x 2`) and `heatmap` (`B x 1 x H/4 x W/4`).
{% if config.light %}The batch size and the image size are dynamic (H and W multiples of 4; trained at
{{ config.img_size }} px).{% else %}The batch size is dynamic; H = W = {{ config.img_size }} (the full model's
MLP reads the whole feature map).{% endif %}

```python
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("generator_{{ direction }}.onnx")
image, cam_logit, heatmap = session.run(None, {"input": batch.astype(np.float32)})
```
{% else %}
```bash
pip install ugatit-cli
ugatit translate photos/ --model {{ model_id }} --direction {{ direction }} --output translated/
```

```python
import ugatit_cli
generator = ugatit_cli.load_generator("{{ model_id }}", direction="{{ direction }}")
image, cam_logit, heatmap = generator(batch)  # batch: B x 3 x H x W in [-1, 1]
```
{% endif %}
## Architecture

| setting | value |
| --- | --- |
{% for key, value in config.items() %}| `{{ key }}` | `{{ value }}` |
{% endfor %}
{% if source %}
## Origin

{{ source }}
{% endif %}
{% if training %}
## Training

| hyper-parameter | value |
| --- | --- |
{% for key, value in training.items() %}| `{{ key }}` | `{{ value }}` |
{% endfor %}
{% endif %}
{% if metrics %}
## Metrics

| metric | value |
| --- | --- |
{% for key, value in metrics.items() %}| {{ key }} | {{ value }} |
{% endfor %}
{% endif %}
## Citation

```bibtex
@inproceedings{kim2020ugatit,
  title     = {U-GAT-IT: Unsupervised Generative Attentional Networks with Adaptive Layer-Instance
               Normalization for Image-to-Image Translation},
  author    = {Junho Kim and Minjae Kim and Hyeonwoo Kang and Kwang Hee Lee},
  booktitle = {International Conference on Learning Representations},
  year      = {2020}
}
```
"""


class UGATITModel(
    ModelHubMixin,
    library_name="ugatit-cli",
    license="mit",
    pipeline_tag="image-to-image",
    tags=["u-gat-it", "gan", "image-to-image", "pytorch"],
    paper_url="https://arxiv.org/abs/1907.10830",
    model_card_template=MODEL_CARD,
):
    """Both generators of a U-GAT-IT model (either may be absent when only one direction was loaded).

    ``card`` holds what a loader knows about the model's origin for its model card (``source``: a
    Markdown sentence; ``training``: the training hyper-parameters; ``metrics``: measured scores).
    ``weights_dtype`` is the dtype ``save_pretrained``/``push_to_hub`` store the weights in.
    """

    def __init__(self, config: UGATITConfig, generators: Mapping[str, Generator] | None = None,
                 card: Mapping[str, Any] | None = None, weights_dtype: str = "float32"):
        if weights_dtype not in WEIGHTS_DTYPES:
            raise ValueError(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        self.config = config
        self.generators: dict[str, Generator] = dict(generators or {})
        self.card: dict[str, Any] = dict(card or {})
        self.weights_dtype = weights_dtype

    def _save_pretrained(self, save_directory: Path) -> None:
        if not self.generators:
            raise UserError("nothing to save: the model holds no generator")
        dtype = WEIGHTS_DTYPES[self.weights_dtype]
        for direction, generator in self.generators.items():
            state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
                     for k, v in generator.state_dict().items()}
            save_file(state, str(save_directory / weights_name(direction)),
                      metadata={"format": "pt", "dtype": self.weights_dtype})
        self.write_config(save_directory)

    def write_config(self, folder: Path, **extra: Any) -> None:
        """``config.json``: the architecture, the stored weights' dtype and any ``extra`` facts (and
        ``img_size_assumed`` when the source did not store the training size)."""
        data = self.config.to_dict() | {"weights_dtype": self.weights_dtype} | extra
        if self.card.get("img_size_assumed"):
            data["img_size_assumed"] = True
        (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def generate_model_card(self, **kwargs: Any) -> ModelCard:
        """The template's facts come from the model and ``card``; ``kwargs`` (the exporter's) win.

        ``tags`` (a list) adds Hub tags to the class's own, e.g. ``onnx`` for an ONNX export; ``base_model``
        names the Hub repo the model was exported from.
        """
        from . import __version__

        first = next(iter(self.generators), "a2b")
        files = {weights_name(d): f"generator {d} ({'A -> B' if d == 'a2b' else 'B -> A'}), safetensors"
                 for d in self.generators}
        facts = {"title": "U-GAT-IT model", "model_id": "path/to/this/folder", "direction": first,
                 "files": files, "config": self.config.to_dict(), "weights_dtype": self.weights_dtype,
                 "version": __version__} | self.card | kwargs
        card_data = copy.deepcopy(self._hub_mixin_info.model_card_data)
        card_data.tags = list(dict.fromkeys([*(card_data.tags or []), *facts.pop("tags", [])]))
        card_data.base_model = facts.pop("base_model", None)  # the Hub repo this one was exported from
        return ModelCard.from_template(card_data, template_str=self._hub_mixin_info.model_card_template,
                                       repo_url=self._hub_mixin_info.repo_url, paper_url=self._hub_mixin_info.paper_url,
                                       docs_url=self._hub_mixin_info.docs_url, **facts)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path, *, force_download: bool = False,
        token: str | bool | None = None, cache_dir: str | Path | None = None, local_files_only: bool = False,
        revision: str | None = None,
        directions: Iterable[str] = DIRECTIONS, **_: Any,
    ) -> "UGATITModel":
        """Load a local model folder or a Hub repo. ``config.json`` is read and validated here (an object,
        every field typed and in range) before anything is sized by it; the mixin's own reading would pass
        a list, ``null`` or ``"ch": "4"`` on to a traceback."""
        model_id = str(pretrained_model_name_or_path)
        if os.path.isdir(model_id):
            config_file = os.path.join(model_id, CONFIG_NAME)
        else:
            config_file = hf_hub_download(repo_id=model_id, filename=CONFIG_NAME, revision=revision,
                                          cache_dir=cache_dir, force_download=force_download, token=token,
                                          local_files_only=local_files_only)
        config = read_model_config(config_file, origin=model_id if not os.path.isdir(model_id) else None)
        return cls._from_pretrained(model_id=model_id, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, local_files_only=local_files_only, token=token,
                                    config=config, directions=directions)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: UGATITConfig | None = None,
        directions: Iterable[str] = DIRECTIONS,
        **_: Any,
    ) -> "UGATITModel":
        if not isinstance(config, UGATITConfig):
            if not os.path.isdir(model_id):
                # The mixin logs and swallows Hub errors on config.json; ask again so the real cause
                # (no such repo, bad revision, no network) reaches the caller.
                hf_hub_download(repo_id=model_id, filename=CONFIG_NAME, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only, token=token)
            raise UserError(f"{model_id}: no readable {CONFIG_NAME}; not a ugatit-cli model folder")
        generators = {}
        for direction in directions:
            name = weights_name(check_direction(direction))
            if os.path.isdir(model_id):
                path = os.path.join(model_id, name)
                if not os.path.isfile(path):
                    raise UserError(f"{model_id}: model folder has no {name} (direction {direction})")
            else:
                path = hf_hub_download(
                    repo_id=model_id, filename=name, revision=revision, cache_dir=cache_dir,
                    force_download=force_download, local_files_only=local_files_only, token=token,
                )
            generators[direction] = generator_from_state(config, read_safetensors(path), origin=path)
        return cls(config, generators)


def read_model_config(path: str | os.PathLike, origin: str | None = None) -> UGATITConfig:
    """A model folder's ``config.json`` as a validated ``UGATITConfig``; UserError with one line otherwise."""
    name = f"{origin}: {CONFIG_NAME}" if origin else str(path)
    try:
        data = read_json_object(path, CONFIG_NAME)
    except UserError as exc:
        raise UserError(f"{origin}: {exc}" if origin else str(exc)) from None
    dtype = data.get("weights_dtype", "float32")
    if dtype not in WEIGHTS_DTYPES:
        raise UserError(f"{name}: weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {dtype!r}")
    try:
        return UGATITConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name}: invalid {CONFIG_NAME} ({exc})") from None


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; an empty, truncated or foreign file is one ``ProcessingError`` line.

    safetensors itself checks that the header's offsets fit the file, so no tensor is allocated beyond the
    file's real size.
    """
    regular_file(path, "safetensors weights file", error=ProcessingError)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProcessingError(f"{path}: not a readable safetensors file ({first})") from None


def assume_training_size(model: "UGATITModel", origin: str) -> "UGATITModel":
    """A light model read from a checkpoint that does not store its training size (official PyTorch and TF
    light checkpoints): say once that ``img_size`` is assumed, and record it in the model card and
    ``config.json`` (``img_size_assumed``); ``export --size`` records the real one instead."""
    import warnings

    size = model.config.img_size
    warnings.warn(f"{origin}: a light checkpoint does not store its training size; {size} px is assumed "
                  "(translate --size N runs at another size; export --size N records the real one)", stacklevel=2)
    model.card["img_size_assumed"] = True
    note = (f" A light checkpoint does not store its training size: `img_size` {size} is assumed, not known.")
    model.card["source"] = model.card.get("source", "") + note
    return model


def set_training_size(model: "UGATITModel", size: int) -> None:
    """Record the training size a user states (export --size): any multiple of 4 for a light model, only its
    own for a full one (its gamma/beta MLP is sized by it)."""
    import dataclasses

    if not model.config.light:
        if size != model.config.img_size:
            raise UserError(f"--size {size}: this full model was trained at {model.config.img_size} px (its "
                            "gamma/beta MLP is sized by it)")
        return
    try:
        config = dataclasses.replace(model.config, img_size=size)
    except ValueError as exc:
        raise UserError(f"--size {size}: {exc}") from None
    model.config = config
    for generator in model.generators.values():
        generator.config = config
    if model.card.pop("img_size_assumed", False):
        model.card["source"] = model.card.get("source", "").split(" A light checkpoint does not store")[0]
    model.card["source"] = model.card.get("source", "") + f" Training size {size} px as stated at export."


def generator_from_state(config: UGATITConfig, state: Mapping[str, torch.Tensor], origin: str) -> Generator:
    """Build a generator and load ``state`` strictly, casting stored fp16/bf16 weights back to fp32.

    Key prefixes of wrapped modules (DataParallel/DDP ``module.``, torch.compile ``_orig_mod.``) are removed;
    tensors that are not stored weights (stride-0 views) or hold NaN/inf are refused; the shapes are
    compared with the configuration's on the meta device before a byte of the network is allocated.
    """
    state = check_tensors(strip_wrapper_prefixes(state), origin)
    mismatch = shape_mismatch(meta_shapes(lambda: Generator(config)), {k: v.shape for k, v in state.items()})
    if mismatch:
        raise UserError(f"{origin}: weights do not match its config ({mismatch})")
    generator = Generator(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise UserError(f"{origin}: weights do not match its config ({first_line})") from None
    return generator.eval()


@contextmanager
def atomic_folder(output_dir: str | os.PathLike, *, overwrite: bool = False,
                  protect: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success rename it to ``output_dir``.

    An interrupted write leaves no folder under the final name; ``overwrite`` replaces an existing one only
    after the new one is complete, and only when it is provably a model folder this tool wrote and holds
    none of ``protect`` (see ``check_output_folder``). The old folder is moved into a fresh private folder
    before it is deleted, so no other sibling is ever touched.
    """
    output_dir = Path(output_dir)
    check_output_folder(output_dir, overwrite=overwrite, protect=protect)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(output_dir.name), suffix=".tmp", dir=output_dir.parent))
    try:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp and safetensors make them private: ordinary modes
            honour_umask(path)
        if output_dir.exists():
            check_output_folder(output_dir, overwrite=overwrite, protect=protect)  # still ours, now?
            holder = Path(tempfile.mkdtemp(prefix=temp_prefix(output_dir.name), suffix=".tmp",
                                           dir=output_dir.parent))
            os.replace(output_dir, holder / "old")
            os.replace(tmp, output_dir)
            shutil.rmtree(holder, ignore_errors=True)
        else:
            os.replace(tmp, output_dir)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(exc, "strerror", None) or str(exc).replace("Error while serializing: ", "")
        raise ProcessingError(f"{output_dir}: cannot write ({reason}); nothing was changed there") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: Files ``ugatit export`` and ``save_pretrained`` write into a model folder; nothing else is ours there.
_OWN_FILE = re.compile(r"^(config\.json|README\.md|generator_(a2b|b2a)\.(safetensors|onnx|onnx\.data))$")


def is_own_model_file(path: Path) -> bool:
    """Whether ``path`` is a file ugatit-cli writes into a model folder (by name, as a plain file)."""
    return bool(_OWN_FILE.match(path.name)) and path.is_file() and not path.is_symlink()


def check_output_folder(output_dir: Path, *, overwrite: bool, protect: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output that is a file, or a non-empty folder unless ``overwrite``; with ``overwrite``, refuse
    a folder that holds anything but a model folder's own files or that is or contains a ``protect`` path
    (the source), the current directory or the home folder (``safety.check_replaceable``)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{output_dir}: folder exists and is not empty (pass --overwrite to replace it)")
        check_replaceable(output_dir, protect=protect, own=is_own_model_file)
    elif output_dir.exists():
        check_replaceable(output_dir, protect=protect)


def write_model_folder(
    model: UGATITModel, output_dir: str | os.PathLike, *, overwrite: bool = False, **card: Any
) -> Path:
    """``save_pretrained`` into a temporary sibling folder, then rename it into place (see ``atomic_folder``)."""
    with atomic_folder(output_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, model_card_kwargs=card)
    return Path(output_dir)


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file() and any(
        (path / weights_name(d)).is_file() for d in DIRECTIONS
    )


_REACHABLE: dict[str, bool] = {}
PROBE_TIMEOUT_S = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable() -> bool:
    """Whether the Hub can be asked at all: False at once under ``HF_HUB_OFFLINE`` (huggingface_hub's own
    switch), else one TCP connection to the endpoint (at most 3 s, remembered for the process). Without
    this, huggingface_hub retries a dead network for ~30 s before it says so. Behind a proxy the answer is
    left to huggingface_hub (True)."""
    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = constants.ENDPOINT
    if endpoint not in _REACHABLE:
        import socket
        from urllib.parse import urlsplit

        if any(os.environ.get(name) for name in _PROXY_VARIABLES):
            _REACHABLE[endpoint] = True
        else:
            parts = urlsplit(endpoint)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_S).close()
                _REACHABLE[endpoint] = True
            except OSError:
                _REACHABLE[endpoint] = False
    return _REACHABLE[endpoint]


def offline_reason() -> str:
    return "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"


def _is_network_error(exc: BaseException) -> bool:
    """A transport failure under requests (OSError) or httpx (its TransportError family, matched by name so
    that no HTTP library is imported here), anywhere in the exception's chain."""
    for _ in range(8):
        if exc is None:
            return False
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, (ConnectionError, TimeoutError)) or names & {"TransportError", "ConnectError",
                                                                        "TimeoutException", "NetworkError"}:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one sentence that says what to do."""
    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except LocalEntryNotFoundError:
        raise UserError(f"{at}: not in the local Hugging Face cache and {offline_reason()}") from None
    except OfflineModeIsEnabled:
        raise UserError(f"{at}: needs the Hugging Face Hub, but HF_HUB_OFFLINE is set") from None
    except RevisionNotFoundError:
        raise UserError(f"{repo_id}: revision {revision!r} not found on the Hub") from None
    except GatedRepoError:
        raise UserError(f"{at}: gated repository; accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise UserError(f"{at}: no such model on the Hugging Face Hub (or it is private: log in first)") from None
    except EntryNotFoundError as exc:
        raise UserError(f"{at}: file not found in the repository ({_first_line(exc)})") from None
    except HfHubHTTPError as exc:
        raise UserError(f"{at}: Hub request failed: {_first_line(exc)}") from None
    except (ConnectionError, TimeoutError) as exc:
        raise UserError(f"{at}: could not reach {constants.ENDPOINT}: {_first_line(exc)}") from None
    except Exception as exc:
        if not _is_network_error(exc):
            raise
        raise UserError(f"{at}: could not reach {constants.ENDPOINT}: {_first_line(exc)}") from None


@contextmanager
def hub_write_errors(repo_id: str) -> Iterator[None]:
    """Turn upload failures (no or read-only token, no network) into one sentence that says what to do.

    huggingface_hub wraps a failed LFS upload in a ``RuntimeError``; the cause is looked up in the chain.
    """
    try:
        yield
    except Exception as exc:
        cause = _upload_failure(exc)
        if cause is None:
            raise
        if isinstance(cause, RuntimeError):  # a failed upload thread, its cause lost to the others
            inner = cause.__cause__ or cause.__context__
            detail = f" ({_first_line(inner)})" if inner else ""
            raise ProcessingError(f"{repo_id}: upload failed: {_first_line(cause)}{detail}; check the connection to "
                            f"{constants.ENDPOINT} and try again") from None
        if not isinstance(cause, HfHubHTTPError):
            raise ProcessingError(f"{repo_id}: could not reach {constants.ENDPOINT}: {_first_line(cause)}") from None
        status = cause.response.status_code if cause.response is not None else None
        said = (cause.server_message or "").strip().splitlines()
        reason = f" ({said[0]})" if said else ""
        if status == 401:
            raise ProcessingError(f"{repo_id}: the Hub rejected the token (401 Unauthorized){reason}; set HF_TOKEN "
                                  "or run `hf auth login` with a valid token") from None
        if status == 403:
            raise ProcessingError(f"{repo_id}: no write access (403 Forbidden){reason}; use a token with write "
                            "permission on that namespace") from None
        raise ProcessingError(f"{repo_id}: upload failed: {_first_line(cause)}") from None


def _upload_failure(exc: BaseException | None) -> BaseException | None:
    """The Hub's HTTP error or the network error behind ``exc``, if any.

    Network errors are ``OSError`` under requests (older huggingface_hub) and httpx's ``TransportError``
    family under httpx; the latter is matched by name, so no HTTP library is imported here. When parallel
    LFS uploads fail, the one reported may have lost its network cause (``Error while uploading ...``).
    """
    top = exc
    for _ in range(8):  # a short chain: the wrapper, then the cause
        if exc is None:
            return None
        if isinstance(exc, HfHubHTTPError):
            return exc
        names = {cls.__name__ for cls in type(exc).__mro__}
        if isinstance(exc, OSError) or names & {"TransportError", "ConnectError", "TimeoutException"}:
            return exc
        if exc.__cause__ is None and exc.__context__ is None:
            break
        exc = exc.__cause__ or exc.__context__
    return top if isinstance(top, RuntimeError) and str(top).startswith("Error while uploading") else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
