"""Print the settings of a rendered service as JSON: one entry per environment variable.

Run by ``tools/docs_reference.py`` with the render's own interpreter (the settings models need
the render's dependencies), as ``python settings_schema.py <package>``, in an environment
without the service's variables, so each value is the render's default. Standard library and
pydantic only: it runs inside the render's virtual environment.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import types
import typing
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

# annotated_types constraint -> how the reference writes it.
_CONSTRAINTS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length"}


def _type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``int``, ``"json" | "console"``, ``dict[str, Any]``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(choice) for choice in typing.get_args(annotation))
    if origin is not None and typing.get_args(annotation):
        args = ", ".join(_type_name(arg) for arg in typing.get_args(annotation))
        if origin in (typing.Union, types.UnionType):
            return args.replace(", ", " | ")
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _plain(value: Any) -> Any:
    """``value`` as JSON can say it, as the environment variable would be written."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str | int | float | bool | list | dict) or value is None:
        return value
    return str(value)


def _constraints(field: FieldInfo) -> list[str]:
    found = []
    for item in field.metadata:
        for attribute, symbol in _CONSTRAINTS.items():
            bound = getattr(item, attribute, None)
            if bound is not None:
                found.append(f"{symbol} {bound}")
    return found


def _summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _is_group(annotation: Any) -> bool:
    """A nested settings model: its fields are variables of their own (``__`` nesting)."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _variables(model: BaseModel, prefix: str, doc: str) -> list[dict[str, Any]]:
    """One row per variable of ``model``, nested models flattened with ``__``; each row
    names its group (the variables' common prefix) and the group's docstring."""
    rows = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        env = f"{prefix}{name.upper()}"
        if _is_group(field.annotation) and isinstance(value, BaseModel):
            rows.extend(_variables(value, f"{env}__", _summary(type(value))))
            continue
        rows.append(
            {
                "env": env,
                "type": _type_name(field.annotation),
                "default": _plain(value),
                "constraints": _constraints(field),
                "description": " ".join((field.description or "").split()),
                "group": prefix,
                "group_doc": doc,
            }
        )
    return rows


def main(package: str) -> None:
    module = importlib.import_module(f"{package}.settings")
    settings_class = module.Settings
    prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
    for name in [name for name in os.environ if name.upper().startswith(prefix)]:
        del os.environ[name]
    settings = settings_class(_env_file=None)
    json.dump(
        {"prefix": prefix, "variables": _variables(settings, prefix, _summary(settings_class))},
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main(sys.argv[1])
