"""ugatit-cli: GAN image-to-image translation (U-GAT-IT, pix2pixHD, TUNIT) from the command line and from Python.

The public names are imported lazily so that ``ugatit --help`` does not pay for importing torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_generator": "ugatit_cli.store.sources",
    "resolve_model": "ugatit_cli.store.sources",
    "UGATITConfig": "ugatit_cli.families.ugatit",
    "UGATITModel": "ugatit_cli.families.ugatit",
    "export_model": "ugatit_cli.export",
    "push_model_folder": "ugatit_cli.export",
    "translate": "ugatit_cli.translation",
    "TranslationReport": "ugatit_cli.translation",
    "kid_from_features": "ugatit_cli.evaluate.metrics",
    "fid_from_features": "ugatit_cli.evaluate.metrics",
    "evaluate_folders": "ugatit_cli.evaluate.evaluation",
    "evaluate_model": "ugatit_cli.evaluate.evaluation",
    "TrainConfig": "ugatit_cli.train",
    "Trainer": "ugatit_cli.train",
    "RunConfig": "ugatit_cli.families.base",
    "Family": "ugatit_cli.families.base",
    "Model": "ugatit_cli.families.base",
    "register_family": "ugatit_cli.families.base",
    "get_family": "ugatit_cli.families.base",
    "families": "ugatit_cli.families.base",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ugatit_cli' has no attribute {name!r}")
