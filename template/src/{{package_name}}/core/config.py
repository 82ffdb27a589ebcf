"""Reading the settings at startup: every configuration error is one clear line, and typos are
not silent.

Template-owned. ``main.get_settings`` reads the settings through ``load_settings``:

- a bad value fails with ``ConfigError``, whose message is one line naming the environment
  variable, its value and what is wrong with it (pydantic's message says what is allowed);
  invalid JSON names the variable and where the JSON breaks;
- a ``<PREFIX>*`` variable (environment or ``.env``) that matches no setting, and a ``.env`` line
  that cannot be parsed, are reported: as warnings logged when the app is built, or as a
  ``ConfigError`` with ``<PREFIX>STRICT_CONFIG=true``.

The known names come from the settings class itself (the team's ``Settings`` with its fields and
nested models), so a setting added in ``settings.py`` is known without a list to maintain.
Dict-typed fields (``downstream_overrides``, a downstream's ``retry`` and ``breaker``) accept any
sub-keys.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from dotenv.parser import parse_stream
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from .settings import PlatformSettings

_Settings = TypeVar("_Settings", bound=PlatformSettings)
_FIELD_IN_SETTINGS_ERROR = re.compile(r'field "([^"]+)"')


class ConfigError(ValueError):
    """The settings cannot be used. The message is one line, meant for whoever deploys."""


def load_settings(
    settings_class: type[_Settings], env_file: str | Path | None = ".env"
) -> _Settings:
    """``settings_class`` read from the environment and ``env_file``, checked as described above."""
    prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
    dotenv, problems = _read_dotenv(env_file, prefix)
    variables = {
        **dotenv,
        **{
            name.upper(): value
            for name, value in os.environ.items()
            if name.upper().startswith(prefix)
        },
    }
    try:
        settings = settings_class(_env_file=env_file)
    except ValidationError as exc:
        raise ConfigError(_describe_invalid(exc, prefix, variables)) from None
    except SettingsError as exc:
        raise ConfigError(_describe_unparseable(exc, prefix, variables)) from None
    exact, open_prefixes = _known_names(settings_class, prefix)
    problems += [
        f"{name} is not a setting (a typo?){_closest(name, exact)}"
        for name in sorted(variables)
        if name not in exact and not name.startswith(tuple(open_prefixes))
    ]
    if problems and settings.strict_config:
        raise ConfigError(
            f"configuration error ({prefix}STRICT_CONFIG is on): " + "; ".join(problems)
        )
    settings.config_warnings.extend(problems)
    return settings


def report(error: ConfigError, *, json_format: bool) -> None:
    """Write ``error`` as one line on stderr: a JSON log line, or plain text."""
    if json_format:
        line = json.dumps(
            {
                "event": "config.invalid",
                "level": "error",
                "error": str(error),
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
        )
    else:
        line = str(error)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def wants_json(settings_class: type[PlatformSettings]) -> bool:
    """Whether the (possibly invalid) configuration asks for JSON logs; the default does."""
    prefix = str(settings_class.model_config.get("env_prefix", "")).upper()
    values = {name.upper(): value for name, value in os.environ.items()}
    return values.get(f"{prefix}LOG_FORMAT", "json").strip().lower() != "console"


def _read_dotenv(env_file: str | Path | None, prefix: str) -> tuple[dict[str, str], list[str]]:
    """The ``<PREFIX>*`` entries of ``env_file`` and its lines that cannot be parsed."""
    if env_file is None or not Path(env_file).is_file():
        return {}, []
    values: dict[str, str] = {}
    problems: list[str] = []
    with Path(env_file).open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                line = binding.original.string.strip().splitlines()[0][:40]
                problems.append(
                    f"{env_file} line {binding.original.line} cannot be parsed ({line!r}); "
                    "write NAME=value"
                )
            elif binding.key is not None and binding.key.upper().startswith(prefix):
                values[binding.key.upper()] = binding.value or ""
    return values, problems


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class in ``annotation`` (``Model`` or ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for member in get_args(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                return member
    return None


def _is_mapping(annotation: Any) -> bool:
    origin = get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _known_names(model: type[BaseModel], prefix: str) -> tuple[set[str], set[str]]:
    """Every variable name ``model``'s fields accept, and the prefixes under which any name is
    accepted (dict-typed fields take any keys)."""
    exact: set[str] = set()
    open_prefixes: set[str] = set()
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        exact.add(variable)
        nested = _model_of(field.annotation)
        if nested is not None:
            more_exact, more_open = _known_names(nested, f"{variable}__")
            exact |= more_exact
            open_prefixes |= more_open
        elif _is_mapping(field.annotation):
            open_prefixes.add(f"{variable}__")
    return exact, open_prefixes


def _closest(name: str, known: Iterable[str]) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f"; did you mean {match[0]}?" if match else ""


def _variable_for(
    loc: tuple[int | str, ...], prefix: str, variables: Mapping[str, str]
) -> tuple[str, str]:
    """The variable that set the value at ``loc``, and the rest of the path inside its JSON."""
    parts = [str(part) for part in loc]
    for end in range(len(parts), 0, -1):
        name = (prefix + "__".join(parts[:end])).upper()
        if name in variables:
            return name, ".".join(parts[end:])
    return (prefix + "__".join(parts)).upper(), ""


def _describe_invalid(exc: ValidationError, prefix: str, variables: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if not error["loc"]:  # a check across fields: its message names the variables
            problems.append(message)
            continue
        name, inside = _variable_for(error["loc"], prefix, variables)
        where = f"{name}={variables[name]}" if name in variables else f"{name} (default)"
        if error["type"] == "missing":
            where = name
        problems.append(f"{where}: {inside + ': ' if inside else ''}{message}")
    return "configuration error: " + "; ".join(problems)


def _describe_unparseable(exc: SettingsError, prefix: str, variables: Mapping[str, str]) -> str:
    found = _FIELD_IN_SETTINGS_ERROR.search(str(exc))
    field = (prefix + found.group(1)).upper() if found else prefix
    problems = []
    for name, value in sorted(variables.items()):
        if name != field and not name.startswith(f"{field}__"):
            continue
        try:
            json.loads(value)
        except ValueError as error:
            if value.lstrip().startswith(("{", "[")):
                problems.append(f"{name} is not valid JSON ({error}); write a JSON object or list")
    if not problems:
        problems.append(f"{field}: {exc.__cause__ or exc}")
    return "configuration error: " + "; ".join(problems)
