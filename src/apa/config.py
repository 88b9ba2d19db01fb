"""Run configurations: one dataclass per mode, YAML for defaults, ``key=value`` overrides win.

`apa train` (apa.training.config.TrainConfig) and `apa proxy`
(apa.experiments.proxy.config.ProxyConfig) read their settings through ``load_config``:

- every field is declared with ``setting(default, help)``; ``config_help`` lists them;
- a YAML file gives values, ``key=value`` arguments override them (each value is read as
  YAML, so ``lr=2e-4`` is a number and ``rows=[model,silence]`` a list);
- each value gets its field's declared type: ``2e-4`` written as text becomes a float, ``3``
  for a float field 3.0, a comma-separated string for a list field a list;
- a mapping field (``train:`` of the proxy) updates its default mapping, and
  ``train.lr=1e-3`` overrides one of its keys;
- an unknown field is an error that says where the list of fields is.

The resolved config is saved with every run (``save_config``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence, TypeVar

from apa.errors import ApaError

C = TypeVar("C")


def setting(default: Any, help: str) -> Any:
    """A config field with its help text (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def read_yaml_mapping(path: str | Path | None) -> dict[str, Any]:
    """A YAML config file as a dict ({} for None); clear errors for a missing or bad file."""
    import yaml

    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ApaError(f"config {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ApaError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ApaError(f"config {path} must be a mapping of field: value")
    return values


def coerce(name: str, type_name: str, value: Any) -> Any:
    """``value`` as the field's declared type (YAML reads `2e-4` as text and `3` as an int)."""
    try:
        if type_name == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if type_name == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name == "bool":
            if not isinstance(value, bool):
                raise ValueError
            return value
        if type_name == "str":
            if isinstance(value, (list, dict)):
                raise ValueError
            return str(value)
        if type_name == "list":
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError
            return value
        if type_name == "dict" and not isinstance(value, dict):
            raise ValueError
    except (TypeError, ValueError):
        raise ApaError(f"config field {name} must be {type_name}, got {value!r}") from None
    return value


def load_config(cls: type[C], path: str | Path | None, overrides: Sequence[str] = (),
                help_hint: str = "") -> C:
    """YAML file (optional) + ``key=value`` overrides -> ``cls(**values).validate()``.

    ``help_hint`` says where the fields are listed (e.g. "`apa train --help-config` lists
    them"). Relative paths in the values stay relative to the working directory.
    """
    import yaml

    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = read_yaml_mapping(path)
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ApaError(f"override {item!r} must look like key=value (e.g. lr=2e-4)")
        key = key.strip()
        outer, dot, inner = key.partition(".")
        if dot and outer in fields and fields[outer].type == "dict":
            nested.setdefault(outer, {})[inner] = yaml.safe_load(text)
        else:
            values[key] = yaml.safe_load(text)
    unknown = sorted(set(values) - set(fields)) + sorted(f"{k}.*" for k in nested if k not in fields)
    if unknown:
        raise ApaError(f"unknown config field(s) {', '.join(unknown)}"
                       + (f"; {help_hint}" if help_hint else f"; known: {', '.join(fields)}"))
    for name, field in fields.items():
        if field.type == "dict" and (name in values or name in nested):
            merged = dict(_default(field))
            merged.update(coerce(name, "dict", values.get(name) or {}))
            merged.update(nested.get(name, {}))
            values[name] = merged
        elif name in values:
            values[name] = coerce(name, field.type, values[name])
    return cls(**values).validate()


def _default(field: dataclasses.Field) -> Any:
    return field.default if field.default is not dataclasses.MISSING else field.default_factory()


def config_help(cls: type) -> str:
    """One line per field: name, default and help."""
    return "\n".join(f"{f.name} (default {_default(f)!r}): {f.metadata['help']}" for f in dataclasses.fields(cls))


def config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    import yaml

    from apa.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_dict(config), sort_keys=False))
