"""Named pretrained models: what ``ugatit models`` lists and ``--model NAME`` resolves (cf. timm's cfgs).

Every family contributes its own (``Family.registered_models``); this module only gathers them.
"""

from ..families.base import RegisteredModel, families


def registered_models() -> dict[str, RegisteredModel]:
    """Every family's named models, by name."""
    found: dict[str, RegisteredModel] = {}
    for family in families().values():
        for model in family.registered_models():
            found.setdefault(model.name, model)
    return found


def __getattr__(name: str):
    if name == "MODELS":  # the 0.1.0 name: a dict of the registered models
        return registered_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
