"""The model folder format, shared by every family, and the Hugging Face Hub, through huggingface_hub's
``ModelHubMixin``.

A model folder is ``config.json`` + one safetensors file per network key of the family (U-GAT-IT: one per
generator direction, so that a user who translates selfies to anime downloads only that ~1.1 GB generator)
+ a ``README.md`` model card. Download, cache, revisions, offline mode and upload are huggingface_hub's own.

``config.json`` holds ``family`` and ``format_version`` (a folder without them was written by ugatit-cli
0.1.0 and holds U-GAT-IT), the family's architecture dataclass, and ``weights_dtype``, the dtype the weights
are stored in (``float32``, or ``float16`` for half-size exports); each safetensors file records it in its
metadata too. Loading always casts back to float32. Readers ignore keys they do not know.

This module sits in ``families/`` (below the store) because families' importers cache converted weights as
model folders; it knows a family only through :class:`~ugatit_cli.families.base.Family`. Importing it imports
no torch (finding a model folder's files for a stored ONNX graph needs none); reading and writing weights do.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

from ..core.files import atomic_folder
from ..core.safety import (
    check_tensors,
    read_json_object,
    regular_file,
    shape_mismatch,
    strip_wrapper_prefixes,
)
from ..errors import ProcessingError, UserError, first_line
from .base import DEFAULT_FAMILY, FORMAT_VERSION, WEIGHTS_DTYPES, Family, Model, get_family

if TYPE_CHECKING:  # pragma: no cover
    import torch

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
#: keys of config.json that are the folder's, not the family config's
FOLDER_KEYS = ("family", "format_version", "weights_dtype", "onnx")
#: ``Model.card["config_notes"]``: facts a loader adds to config.json (e.g. U-GAT-IT's ``img_size_assumed``)


MODEL_CARD = """---
{{ card_data }}
---

# {{ title }}

<<SUMMARY>> exported by
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

<<USE>>## Architecture

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
<<CITATION>>"""


class ModelFolder(
    ModelHubMixin,
    library_name="ugatit-cli",
    license="mit",
    pipeline_tag="image-to-image",
    tags=[],
    model_card_template=MODEL_CARD,
):
    """A :class:`~ugatit_cli.families.base.Model` as huggingface_hub saves, loads and pushes it.

    ``save_pretrained``/``push_to_hub`` store the model's networks in its ``weights_dtype``;
    ``from_pretrained(model_id, directions=...)`` loads the networks those directions need
    (``Family.keys_for``; None: every network a local folder holds, all of the family's on the Hub) and
    returns the ModelFolder; its ``model`` is the loaded Model.
    """

    def __init__(self, model: Model):
        self.model = model

    @property
    def family(self) -> Family:
        return self.model.family

    def _save_pretrained(self, save_directory: Path) -> None:
        self.save_weights(save_directory)
        self.write_config(save_directory)

    def save_weights(self, save_directory: Path) -> None:
        """One safetensors file per network of the model (the family's ``weight_files`` names), in its
        ``weights_dtype`` (integer buffers stay as they are)."""
        model = self.model
        if not model.nets:
            raise UserError("nothing to save: the model holds no network")
        import torch
        from safetensors.torch import save_file

        dtype = getattr(torch, model.weights_dtype)  # float32 or float16 (Model checks it)
        names = model.family.weight_files(model.config)
        for key, net in model.nets.items():
            state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
                     for k, v in net.state_dict().items()}
            save_file(state, str(save_directory / names[key]), metadata={"format": "pt", "dtype": model.weights_dtype})

    def write_config(self, folder: Path, **extra: Any) -> None:
        """``config.json``: the family and format version, the architecture, the stored weights' dtype and any
        ``extra`` facts."""
        model = self.model
        data = ({"family": model.family.name, "format_version": FORMAT_VERSION} | model.config.to_dict()
                | {"weights_dtype": model.weights_dtype} | dict(model.card.get("config_notes") or {}) | extra)
        (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def generate_model_card(self, **kwargs: Any) -> ModelCard:
        """The template's facts come from the family, the model and its ``card``; ``kwargs`` (the exporter's)
        win. ``tags`` (a list) adds Hub tags to the family's, e.g. ``onnx`` for an ONNX export;
        ``base_model`` names the Hub repo the model was exported from; ``license`` (a Hub licence id) replaces
        the MIT licence of ugatit-cli's own models (e.g. for weights converted from a non-commercial release)."""
        from .. import __version__

        model, family = self.model, self.model.family
        facts = {"title": f"{family.title} model", "model_id": "path/to/this/folder",
                 "direction": next(iter(model.nets), family.default_direction),
                 "files": {family.weight_files(model.config)[k]: family.describe_file(k) + ", safetensors"
                           for k in model.nets},
                 "config": model.config.to_dict(), "weights_dtype": model.weights_dtype, "version": __version__}
        facts = facts | family.card_facts(model) | model.card | kwargs
        card_data = copy.deepcopy(self._hub_mixin_info.model_card_data)
        # sorted as huggingface_hub sorts a class's tags (so 0.1.0's cards come out the same), then the extras
        tags = sorted({*family.tags, *(card_data.tags or [])})
        card_data.tags = list(dict.fromkeys([*tags, *facts.pop("tags", [])]))
        card_data.base_model = facts.pop("base_model", None)  # the Hub repo this one was exported from
        card_data.license = facts.pop("license", None) or card_data.license  # e.g. converted non-commercial weights
        template = (self._hub_mixin_info.model_card_template.replace("<<SUMMARY>>", family.card_summary)
                    .replace("<<USE>>", family.card_use).replace("<<CITATION>>", family.card_citation))
        return ModelCard.from_template(card_data, template_str=template, repo_url=self._hub_mixin_info.repo_url,
                                       paper_url=family.paper_url, docs_url=self._hub_mixin_info.docs_url, **facts)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | Path, *, force_download: bool = False,
        token: str | bool | None = None, cache_dir: str | Path | None = None, local_files_only: bool = False,
        revision: str | None = None, directions: Sequence[str] | None = None, **_: Any,
    ) -> ModelFolder:
        """Load a local model folder or a Hub repo. ``config.json`` is read here as a regular file holding a
        JSON object (the mixin's own reading would pass a list, ``null`` or a FIFO on to a traceback); its
        fields are validated by the family's config before anything is sized by them."""
        model_id = str(pretrained_model_name_or_path)
        local = os.path.isdir(model_id)
        if local:
            config_file = os.path.join(model_id, CONFIG_NAME)
            if not os.path.exists(config_file):
                raise UserError(f"{model_id}: no {CONFIG_NAME}; not a ugatit-cli model folder")
        else:
            config_file = hf_hub_download(repo_id=model_id, filename=CONFIG_NAME, revision=revision,
                                          cache_dir=cache_dir, force_download=force_download, token=token,
                                          local_files_only=local_files_only)
        try:
            config = read_json_object(config_file, CONFIG_NAME)
        except UserError as exc:
            raise UserError(str(exc) if local else f"{model_id}: {exc}") from None
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
        config: Any = None,
        directions: Sequence[str] | None = None,
        **_: Any,
    ) -> ModelFolder:
        local = os.path.isdir(model_id)
        if not isinstance(config, dict):
            if not local:
                # The mixin logs and swallows Hub errors on config.json; ask again so the real cause
                # (no such repo, bad revision, no network) reaches the caller.
                hf_hub_download(repo_id=model_id, filename=CONFIG_NAME, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only, token=token)
            raise UserError(f"{model_id}: no readable {CONFIG_NAME}; not a ugatit-cli model folder")
        family, model_config, weights_dtype = read_config(config, model_id)
        names = family.weight_files(model_config)
        keys = [k for k in family.keys_for(directions) if k in names]  # the networks this config has
        if directions is None and local:  # every network the folder holds
            keys = [k for k in keys if os.path.isfile(os.path.join(model_id, names[k]))]
        nets = {}
        for key in keys:
            name = names[key]
            if local:
                path = os.path.join(model_id, name)
                if not os.path.isfile(path):
                    raise UserError(f"{model_id}: model folder has no {name} ({family.describe_file(key)})")
            else:
                path = hf_hub_download(
                    repo_id=model_id, filename=name, revision=revision, cache_dir=cache_dir,
                    force_download=force_download, local_files_only=local_files_only, token=token,
                )
            nets[key] = net_from_state(family, model_config, key, read_safetensors(path), origin=path)
        return cls(Model(family, model_config, nets, weights_dtype=weights_dtype))


def read_config(data: dict[str, Any], origin: str) -> tuple[Family, Any, str]:
    """The family, its config and the weights dtype of a ``config.json`` mapping (UserError when invalid)."""
    name = data.get("family") or DEFAULT_FAMILY
    if not isinstance(name, str):
        raise UserError(f"{origin}: invalid {CONFIG_NAME} (family must be a name, got {name!r})")
    family = get_family(name)
    version = data.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{origin}: {CONFIG_NAME} has format_version {version!r}; this ugatit-cli reads up to "
                        f"{FORMAT_VERSION} (upgrade ugatit-cli)")
    try:
        model_config = family.model_config.from_dict({k: v for k, v in data.items() if k not in FOLDER_KEYS})
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"{origin}: invalid {CONFIG_NAME} ({exc})") from None
    weights_dtype = data.get("weights_dtype", "float32")
    if not isinstance(weights_dtype, str) or weights_dtype not in WEIGHTS_DTYPES:
        raise UserError(f"{origin}: invalid {CONFIG_NAME} (weights_dtype {weights_dtype!r})")
    return family, model_config, weights_dtype


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; an empty, truncated, foreign or non-regular file is one
    ``ProcessingError`` line (safetensors itself checks that the header's offsets fit the file, so nothing
    is allocated beyond the file's real size)."""
    from safetensors.torch import load_file

    regular_file(path, "safetensors weights file", error=ProcessingError)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ProcessingError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None


def net_from_state(family: Family, config: Any, key: str, state: dict[str, torch.Tensor], origin: str):
    """Build network ``key`` and load ``state`` strictly (stored fp16/bf16 weights cast back to fp32).

    Every family's weights pass here: wrapper key prefixes (DataParallel/DDP ``module.``, torch.compile
    ``_orig_mod.``) are removed; tensors that are not stored weights (stride-0 views claiming more than the
    file holds) or hold NaN/inf are refused; the shapes are compared with the configuration's on the meta
    device before a byte of the network is allocated. UserError / ProcessingError with one line otherwise.
    """
    import torch

    from ..core.nets import adopt_weights, load_strict

    state = check_tensors(strip_wrapper_prefixes(state), origin)
    with torch.device("meta"):  # no memory: a hostile configuration cannot exhaust it
        on_meta = family.build_net(config, key)
    mismatch = shape_mismatch({k: v.shape for k, v in on_meta.state_dict().items()},
                              {k: v.shape for k, v in state.items()})
    if mismatch:
        raise UserError(f"{origin}: weights do not match its config ({mismatch})")
    net = adopt_weights(on_meta, state)  # the file's tensors become the weights (fp16/bf16 cast): one copy in memory
    if net is None:
        net = load_strict(family.build_net(config, key), state, origin, to_float=True)
    return net.eval()


def read_model_folder(model_id: str | os.PathLike, directions: Sequence[str] | None = None,
                      revision: str | None = None, local_files_only: bool = False) -> Model:
    """The Model in a local model folder or Hub repo, with the networks ``directions`` need (see
    :class:`ModelFolder`). UserError for a folder that is not one, a missing file, weights that do not fit."""
    return ModelFolder.from_pretrained(str(model_id), directions=None if directions is None else tuple(directions),
                                       revision=revision, local_files_only=local_files_only).model


def write_model_folder(
    model: Model, output_dir: str | os.PathLike, *, overwrite: bool = False, **card: Any
) -> Path:
    """``save_pretrained`` into a temporary sibling folder, then rename it into place (see ``atomic_folder``)."""
    with atomic_folder(output_dir, overwrite=overwrite) as tmp:
        ModelFolder(model).save_pretrained(tmp, model_card_kwargs=card)
    return Path(output_dir)


def folder_family(path: Path) -> Family | None:
    """The family of a model folder (config.json names it; none named: U-GAT-IT), or None when ``path`` is
    not a model folder (no config.json, or none of the family's weight files)."""
    if not path.is_dir() or not (path / CONFIG_NAME).is_file():
        return None
    try:
        data = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("family") or "", str):
        # a damaged config.json beside weights: a model folder, so that reading it says what is wrong
        return get_family(DEFAULT_FAMILY) if any(path.glob("*.safetensors")) else None
    if data.get("format") is not None:  # a training run's config.json
        return None
    family = get_family(data.get("family") or DEFAULT_FAMILY)
    return family if any((path / name).is_file() for name in family.weight_files(None).values()) else None


def is_model_folder(path: Path) -> bool:
    return folder_family(path) is not None


_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def looks_local(text: str) -> bool:
    """Whether ``text`` (that names nothing that exists) is a local path rather than a Hub repo id (USER/NAME):
    it starts with ``.``, ``/`` or ``~``, has more than one separator or a backslash, or its parent folder
    exists here (``runs/nonexist`` beside a ``runs`` folder)."""
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        return True
    parent = Path(text).parent
    return str(parent) not in ("", ".") and parent.is_dir()


def is_hub_repo_id(text: str) -> bool:
    """Whether MODEL ``text`` (that names nothing that exists here) is read as a Hub repo id: USER/NAME, not a
    local path (:func:`looks_local`)."""
    return not looks_local(text) and bool(_REPO_ID.match(text))


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


def _is_network_error(exc: BaseException | None) -> bool:
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
        raise UserError(f"{at}: file not found in the repository ({first_line(exc)})") from None
    except HfHubHTTPError as exc:
        raise UserError(f"{at}: Hub request failed: {first_line(exc)}") from None
    except (ConnectionError, TimeoutError) as exc:
        raise UserError(f"{at}: could not reach {constants.ENDPOINT}: {first_line(exc)}") from None
    except Exception as exc:  # httpx transport errors (huggingface_hub >= 1.0), anywhere in the chain
        if not _is_network_error(exc):
            raise
        raise UserError(f"{at}: could not reach {constants.ENDPOINT}: {first_line(exc)}") from None


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
            detail = f" ({first_line(inner)})" if inner else ""
            raise ProcessingError(f"{repo_id}: upload failed: {first_line(cause)}{detail}; check the connection to "
                            f"{constants.ENDPOINT} and try again") from None
        if not isinstance(cause, HfHubHTTPError):
            raise ProcessingError(f"{repo_id}: could not reach {constants.ENDPOINT}: {first_line(cause)}") from None
        status = cause.response.status_code if cause.response is not None else None
        said = (cause.server_message or "").strip().splitlines()
        reason = f" ({said[0]})" if said else ""
        if status == 401:
            raise ProcessingError(f"{repo_id}: the Hub rejected the token (401 Unauthorized){reason}; set HF_TOKEN "
                                  "or run `hf auth login` with a valid token") from None
        if status == 403:
            raise ProcessingError(f"{repo_id}: no write access (403 Forbidden){reason}; use a token with write "
                            "permission on that namespace") from None
        raise ProcessingError(f"{repo_id}: upload failed: {first_line(cause)}") from None


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
