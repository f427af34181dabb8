"""Fitted models as data: an object tree written to one ``.npz`` file of arrays and JSON, no pickle.

Models used to be stored with joblib (pickle) and loaded from a path kept in the warehouse, so
anyone who could write the warehouse or the models folder could run code in the pipeline.
Here loading runs no code from the file: numpy reads the arrays with ``allow_pickle=False`` and
the tree is JSON. The tree is generic, not tied to today's detector classes:

* JSON values (None, bool, int, str, float including NaN and infinities), lists, tuples, dicts;
* numpy arrays (numbers, booleans, datetimes, text) and numpy scalars; pandas Timestamps and
  Timedeltas;
* dataclasses and plain objects (their ``__dict__``) whose class is defined in one of
  ``allowed`` module prefixes (``anomaly_assets.`` by default). Loading imports that module,
  creates the object without calling ``__init__`` and sets its attributes: no other callable of
  the file's choosing is ever called.

Anything else (an sklearn estimator, a lambda) is refused when saving, naming where in the tree
it is.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

ALLOWED = ("anomaly_assets.",)
_TREE = "__tree__"
_FORMAT = 1


class ArtifactError(ValueError):
    """An object cannot be stored, or a file is not an artifact this code wrote."""


def _class_name(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == p.rstrip(".") or module.startswith(p) for p in allowed)


class _Writer:
    def __init__(self, allowed):
        self.allowed = allowed
        self.arrays: dict[str, np.ndarray] = {}

    def encode(self, obj, where: str):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and not isinstance(obj, np.integer):
            return obj
        if isinstance(obj, float) and not isinstance(obj, np.floating):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind in "biufcmMU":
                key = f"a{len(self.arrays)}"
                self.arrays[key] = obj
                return {"__array__": key}
            if obj.dtype.kind == "O":
                return {"__objects__": [self.encode(x, f"{where}[{i}]") for i, x in enumerate(obj.ravel().tolist())],
                        "shape": list(obj.shape)}
            raise ArtifactError(f"{where}: numpy arrays of dtype {obj.dtype} cannot be stored")
        if isinstance(obj, np.generic):
            return {"__scalar__": obj.dtype.str, "value": self.encode(obj.item(), where)}
        if isinstance(obj, pd.Timestamp):
            return {"__timestamp__": obj.isoformat()}
        if obj is pd.NaT:
            return {"__nat__": True}
        if isinstance(obj, pd.Timedelta):
            return {"__timedelta__": obj.value}
        if isinstance(obj, list):
            return [self.encode(x, f"{where}[{i}]") for i, x in enumerate(obj)]
        if isinstance(obj, tuple) and type(obj) is tuple:
            return {"__tuple__": [self.encode(x, f"{where}[{i}]") for i, x in enumerate(obj)]}
        if isinstance(obj, dict) and type(obj) is dict:
            if all(isinstance(k, str) for k in obj):
                return {"__dict__": {k: self.encode(v, f"{where}[{k!r}]") for k, v in obj.items()}}
            return {"__pairs__": [[self.encode(k, f"{where}.key"), self.encode(v, f"{where}[{k!r}]")]
                                  for k, v in obj.items()]}
        cls = type(obj)
        if _allowed(cls.__module__, self.allowed):
            if dataclasses.is_dataclass(obj):
                return {"__dataclass__": _class_name(cls),
                        "fields": {f.name: self.encode(getattr(obj, f.name), f"{where}.{f.name}")
                                   for f in dataclasses.fields(obj)}}
            if hasattr(obj, "__dict__") and not hasattr(cls, "__slots__"):
                return {"__object__": _class_name(cls),
                        "state": {k: self.encode(v, f"{where}.{k}") for k, v in vars(obj).items()}}
        raise ArtifactError(
            f"{where}: a {cls.__module__}.{cls.__qualname__} cannot be stored as data (only JSON values, numpy "
            f"arrays, pandas timestamps and dataclasses or plain objects of {', '.join(self.allowed)})"
        )


class _Reader:
    def __init__(self, arrays, allowed, source: str):
        self.arrays, self.allowed, self.source = arrays, allowed, source

    def cls(self, name: str):
        module, _, qual = name.partition(":")
        if not _allowed(module, self.allowed):
            raise ArtifactError(f"{self.source}: names class {name}, outside {', '.join(self.allowed)}: not loaded")
        target = importlib.import_module(module)
        for part in qual.split("."):
            target = getattr(target, part)
        if not isinstance(target, type):
            raise ArtifactError(f"{self.source}: {name} is not a class")
        return target

    def decode(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(x) for x in node]
        if "__array__" in node:
            return self.arrays[node["__array__"]]
        if "__objects__" in node:
            out = np.empty(len(node["__objects__"]), dtype=object)
            out[:] = [self.decode(x) for x in node["__objects__"]]
            return out.reshape(node["shape"])
        if "__float__" in node:
            return float(node["__float__"])
        if "__scalar__" in node:
            return np.dtype(node["__scalar__"]).type(self.decode(node["value"]))
        if "__timestamp__" in node:
            return pd.Timestamp(node["__timestamp__"])
        if "__nat__" in node:
            return pd.NaT
        if "__timedelta__" in node:
            return pd.Timedelta(node["__timedelta__"])
        if "__tuple__" in node:
            return tuple(self.decode(x) for x in node["__tuple__"])
        if "__dict__" in node:
            return {k: self.decode(v) for k, v in node["__dict__"].items()}
        if "__pairs__" in node:
            return {self._key(self.decode(k)): self.decode(v) for k, v in node["__pairs__"]}
        if "__dataclass__" in node or "__object__" in node:
            cls = self.cls(node.get("__dataclass__") or node["__object__"])
            if "__dataclass__" in node and not dataclasses.is_dataclass(cls):
                raise ArtifactError(f"{self.source}: {node['__dataclass__']} is not a dataclass")
            obj = cls.__new__(cls)
            for k, v in (node.get("fields") or node.get("state") or {}).items():
                object.__setattr__(obj, k, self.decode(v))  # also for frozen dataclasses
            return obj
        raise ArtifactError(f"{self.source}: unknown node {sorted(node)[:3]}")

    @staticmethod
    def _key(k):
        return tuple(k) if isinstance(k, list) else k


def dumps(obj, allowed: tuple[str, ...] = ALLOWED) -> bytes:
    """``obj`` as the bytes of an ``.npz`` file (see the module docstring for what it may hold).

    Raises
    ------
    ArtifactError
        Naming where in the tree an object that cannot be stored as data is.
    """
    writer = _Writer(tuple(allowed))
    tree = json.dumps({"format": _FORMAT, "root": writer.encode(obj, type(obj).__name__)}, allow_nan=False)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **writer.arrays, **{_TREE: np.frombuffer(tree.encode(), dtype=np.uint8)})
    return buffer.getvalue()


def load(path: Path, allowed: tuple[str, ...] = ALLOWED):
    """The object stored in ``path`` by :func:`dumps`; runs no code from the file.

    Raises
    ------
    ArtifactError
        When the file is not such an artifact, or names a class outside ``allowed``.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{path}: not a model artifact ({type(exc).__name__}: {exc})") from None
    try:
        tree = json.loads(arrays.pop(_TREE).tobytes().decode())
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a model artifact (no readable tree: {type(exc).__name__})") from None
    if tree.get("format") != _FORMAT:
        raise ArtifactError(f"{path}: artifact format {tree.get('format')!r}, expected {_FORMAT}")
    return _Reader(arrays, tuple(allowed), str(path)).decode(tree["root"])
