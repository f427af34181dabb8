"""Which files of a landing folder are landing files, and the entity a file name stands for."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Refused:
    """A path of the landing folder that looks like a landing file but is not read.

    Attributes
    ----------
    path : Path
        The path in the folder (the link itself, for a symbolic link).
    source_file : str
        That path relative to the landing folder (posix).
    reason : str
        Why, and what to do; never the target's content.
    """

    path: Path
    source_file: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    """What :func:`discover` found: the files to read and the paths refused, each sorted by path."""

    files: list[Path]
    refused: list[Refused]


OUTSIDE = ("is a symbolic link to a path outside the landing folder: not read (the landing folder never reads "
           "outside itself; copy or move the data into the folder)")
DANGLING = "is a symbolic link to nothing (its target does not exist): not read"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def discover(landing_dir: Path) -> Discovery:
    """Landing files under ``landing_dir``, searched recursively, and the paths refused.

    Hidden files and directories (name starting with '.') are skipped, and so is every file
    whose name does not end with one of :data:`SUFFIXES` (compared case-insensitively).
    Symbolic links are followed only inside the folder: a link (to a file or a directory)
    whose target is outside it, or that points nowhere, is refused, never read, and so is a
    landing name that is not a regular file (a FIFO would block the reader). Each directory is
    walked once, so a link back up the tree cannot loop.

    Raises
    ------
    LandingError
        If ``landing_dir`` does not exist or is not a directory.
    """
    root = Path(landing_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise LandingError(f"landing folder {root} {what}")
    real_root = root.resolve()
    found: list[tuple[str, Path]] = []
    refused: list[Refused] = []
    seen = {real_root}
    todo = [root]
    while todo:
        directory = todo.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue  # removed, or not ours to read: nothing in it is a landing file
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            landing_name = _matching_suffix(entry.name) is not None
            if entry.is_symlink():
                target = path.resolve()
                if not target.exists():
                    if landing_name:
                        refused.append(Refused(path, rel, DANGLING))
                    continue
                if not _inside(target, real_root):
                    if landing_name or target.is_dir():
                        refused.append(Refused(path, rel, OUTSIDE))
                    continue
                if target.is_dir():
                    if target not in seen:
                        seen.add(target)
                        todo.append(path)
                    continue
            elif entry.is_dir(follow_symlinks=False):
                real = path.resolve()
                if real not in seen:
                    seen.add(real)
                    todo.append(path)
                continue
            if not landing_name:
                continue
            if path.is_file():
                found.append((rel, path))
            else:
                refused.append(Refused(path, rel, "is not a regular file (a pipe, socket or device): not read"))
    return Discovery([path for _, path in sorted(found)], sorted(refused, key=lambda r: r.source_file))


def discover_files(landing_dir: Path) -> list[Path]:
    """The files :func:`discover` finds to read, sorted by relative path.

    Raises
    ------
    LandingError
        If ``landing_dir`` does not exist or is not a directory.
    """
    return discover(landing_dir).files


def entity_from_path(path: Path) -> str:
    """The file name without its landing suffix: ``site-3.csv.gz`` -> ``site-3``."""
    name = Path(path).name
    suffix = _matching_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name
