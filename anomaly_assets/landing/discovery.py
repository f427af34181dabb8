"""Which files of a landing folder are landing files, and the entity a file name stands for."""

from __future__ import annotations

import os
from pathlib import Path

SUFFIXES = (".csv", ".csv.gz", ".parquet")


class LandingError(ValueError):
    """A landing input (folder or labels file) cannot be used; the message says where and why."""



def _matching_suffix(name: str) -> str | None:
    lower = name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def discover_files(landing_dir: Path) -> list[Path]:
    """Landing files under ``landing_dir``, searched recursively, sorted by relative path.

    Hidden files and directories (name starting with '.') are skipped, and so is every file
    whose name does not end with one of :data:`SUFFIXES` (compared case-insensitively).

    Raises
    ------
    LandingError
        If ``landing_dir`` does not exist or is not a directory.
    """
    root = Path(landing_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise LandingError(f"landing folder {root} {what}")
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or _matching_suffix(name) is None:
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return [path for _, path in sorted(found)]


def entity_from_path(path: Path) -> str:
    """The file name without its landing suffix: ``site-3.csv.gz`` -> ``site-3``."""
    name = Path(path).name
    suffix = _matching_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name
