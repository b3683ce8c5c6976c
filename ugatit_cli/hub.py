"""The model folder format and the Hugging Face Hub, through huggingface_hub's ``ModelHubMixin``.

A model folder is ``config.json`` + one safetensors file per generator direction + a ``README.md`` model
card. One file per direction lets a user who translates selfies to anime download only that generator
(~1.1 GB for the full 256 px model). Download, cache, revisions, offline mode and upload are
huggingface_hub's own.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file, save_file

from .errors import UserError
from .model import Generator, UGATITConfig

DIRECTIONS = ("a2b", "b2a")
CONFIG_NAME = "config.json"


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

A [U-GAT-IT](https://arxiv.org/abs/1907.10830) image-to-image translation model in the
[ugatit-cli](https://pypi.org/project/ugatit-cli/) model-folder format: `config.json` and one safetensors
file per generator direction ({{ directions }}).

## Use

```bash
pip install ugatit-cli
ugatit translate photos/ --model {{ model_id }} --direction a2b --output translated/
```

```python
import ugatit_cli
generator = ugatit_cli.load_generator("{{ model_id }}", direction="a2b")
image, cam_logit, heatmap = generator(batch)  # batch: B x 3 x H x W in [-1, 1]
```

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
    """

    def __init__(self, config: UGATITConfig, generators: Mapping[str, Generator] | None = None,
                 card: Mapping[str, Any] | None = None):
        self.config = config
        self.generators: dict[str, Generator] = dict(generators or {})
        self.card: dict[str, Any] = dict(card or {})

    def _save_pretrained(self, save_directory: Path) -> None:
        if not self.generators:
            raise UserError("nothing to save: the model holds no generator")
        for direction, generator in self.generators.items():
            state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
            save_file(state, str(save_directory / weights_name(direction)), metadata={"format": "pt"})
        (save_directory / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True))

    def generate_model_card(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("title", "U-GAT-IT model")
        kwargs.setdefault("model_id", "path/to/this/folder")
        kwargs.setdefault("directions", ", ".join(f"`{weights_name(d)}`" for d in self.generators))
        kwargs.setdefault("config", self.config.to_dict())
        for key, value in self.card.items():
            kwargs.setdefault(key, value)
        return super().generate_model_card(*args, **kwargs)

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
            generators[direction] = generator_from_state(config, load_file(path), origin=path)
        return cls(config, generators)


def generator_from_state(config: UGATITConfig, state: Mapping[str, torch.Tensor], origin: str) -> Generator:
    """Build a generator and load ``state`` strictly, casting stored fp16/bf16 weights back to fp32."""
    generator = Generator(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise UserError(f"{origin}: weights do not match its config ({first_line})") from None
    return generator.eval()


def write_model_folder(
    model: UGATITModel, output_dir: str | os.PathLike, *, overwrite: bool = False, **card: Any
) -> Path:
    """``save_pretrained`` into a temporary sibling folder, then rename it into place.

    An interrupted export leaves no folder under the final name; ``overwrite`` replaces an existing one
    only after the new one is complete.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise UserError(f"{output_dir}: folder exists and is not empty (pass --overwrite to replace it)")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp, model_card_kwargs=card)
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output_dir, old)
            os.replace(tmp, output_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file() and any(
        (path / weights_name(d)).is_file() for d in DIRECTIONS
    )


@contextmanager
def hub_errors(repo_id: str, revision: str | None = None) -> Iterator[None]:
    """Turn huggingface_hub's exceptions into one sentence that says what to do."""
    at = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} could not be reached"
        raise UserError(f"{at}: not in the local Hugging Face cache and {how}") from None
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
