"""User-edited YAML config, validated with pydantic when definitions load."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


class ConfigFileError(ValueError):
    """A config file is invalid; the message names the file, the field and the value."""


class MetricFamilies(BaseModel):
    model_config = ConfigDict(extra="forbid")
    families: dict[str, str] = {}
    units: dict[str, str] = {}
    kinds: dict[str, str] = {}  # metric -> sensor | count | currency | ratio | stock (core/semantics.py)

    @field_validator("families", "units")
    @classmethod
    def _non_empty(cls, v: dict[str, str]) -> dict[str, str]:
        for k, x in v.items():
            if not str(k).strip() or not str(x).strip():
                raise ValueError(f"empty name or value in entry {k!r}: {x!r}")
        return v

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: dict[str, str]) -> dict[str, str]:
        from anomaly_assets.core.semantics import KINDS

        for k, x in v.items():
            if x not in KINDS:
                raise ValueError(f"metric {k!r}: unknown kind {x!r}; allowed: {', '.join(KINDS)}")
        return v


def read_yaml_mapping(path: Path, expected: str) -> dict:
    """The YAML mapping in ``path`` ({} when empty); a ConfigFileError naming the file when it is
    not UTF-8 YAML or not a mapping (``expected`` says what the mapping should hold)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping with {expected}; found {type(data).__name__}")
    return data


def _errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(top level)"
        lines.append(f"  field '{where}': {e['msg']} (found {e.get('input')!r})")
    return "\n".join(lines)


_OWNER = r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$"


class Owners(BaseModel):
    """configs/owners.yaml: asset group -> owners (emails or team:NAME)."""

    model_config = ConfigDict(extra="forbid")
    groups: dict[str, list[str]] = {}

    @field_validator("groups")
    @classmethod
    def _owners(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        import re

        for group, owners in v.items():
            for o in owners:
                if not re.match(_OWNER, str(o)):
                    raise ValueError(f"group {group!r}: owner {o!r} is neither an email address nor team:NAME")
        return v


def load_owners(path: Path | None) -> Owners:
    """The owners file (no file: no owners); a ConfigFileError naming the file and field when invalid."""
    if path is None or not path.exists():
        return Owners()
    data = read_yaml_mapping(path, "'groups'")
    try:
        return Owners.model_validate(data)
    except ValidationError as e:
        raise ConfigFileError(_errors(path, e)) from e


def load_metric_families(path: Path | None) -> MetricFamilies:
    if path is None or not path.exists():
        return MetricFamilies()
    data = read_yaml_mapping(path, "'families', 'units' and 'kinds'")
    try:
        return MetricFamilies.model_validate(data)
    except ValidationError as e:
        raise ConfigFileError(_errors(path, e)) from e
