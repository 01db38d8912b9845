"""`--set section.key=value` overrides: dotted keys into nested config values.

The value's type decides how the text is read, so that what a user types on a command line
reaches a text field unchanged (see `apply_override`).
"""

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from dgrpo.errors import UserError


def apply_override(values: dict, item: str, model: type[BaseModel]) -> None:
    """`loss.lam=0.5` -> values["loss"]["lam"] = 0.5, for the pydantic `model` the values will fill.

    A field that holds text (str, str | None, a Literal of names, a value of a dict[str, str]
    such as data.defaults.instruction) receives the raw text, so `: `, `#` or quotes in it are
    kept as typed; `null` or `~` sets an optional one to None. Any other value is parsed as
    YAML (numbers, booleans, lists, mappings), and pydantic converts and checks it.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override '{item}' is not key=value", "write e.g. --set loss.lam=0.5")
    *parents, leaf = key.strip().split(".")
    node = values
    for name in parents:
        node = node.setdefault(name, {})
        if not isinstance(node, dict):
            raise UserError(f"override '{item}': '{name}' is not a section", "check the key path")
    node[leaf] = _override_value(raw, _annotation_at(model, [*parents, leaf]))


def _override_value(raw: str, annotation: Any) -> Any:
    kinds = {type(None) if arg is None else arg for arg in _flat_args(annotation)}
    if kinds and kinds <= {str, type(None)}:
        return None if type(None) in kinds and raw.strip() in ("null", "~") else raw
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _flat_args(annotation: Any) -> set:
    """str | None -> {str, None}; Literal["a", "b"] -> {str}; anything else -> {annotation}."""
    if get_origin(annotation) is Literal:
        return {type(arg) for arg in get_args(annotation)}
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*(_flat_args(arg) for arg in get_args(annotation)))
    return {annotation}


def _annotation_at(model: type[BaseModel], path: list[str]) -> Any:
    """The type a dotted key holds (None when the key does not exist: validation reports it)."""
    annotation: Any = model
    for name in path:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(name)
            annotation = field.annotation if field is not None else None
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
    return annotation
