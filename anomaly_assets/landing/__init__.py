"""Landing-folder files -> one tidy frame of observations, and the reasons rows are rejected.

A landing folder holds CSV (optionally gzip-compressed, ``.csv.gz``) or Parquet files in one of
three shapes, recognised from the header (names compared case-insensitively after stripping
whitespace and a UTF-8 BOM):

``long``
    exactly the columns ``entity_id,timestamp,metric,value`` (any order).
``wide``
    ``entity_id,timestamp,<metric>,<metric>,...``: every other column is a metric, named as
    written in the header (stripped).
``single``
    ``timestamp,value``: one series; the entity is the file name without its suffix and the
    metric is ``value``.

Every file becomes a :class:`FileRead`: the observations that can be stored (one row per entity,
metric, timestamp and value) and one rejected row per observation that cannot, with the physical
line it came from, the line's text and the reason. The accounting unit is the observation (a
long or single line is one, a wide line is one per metric column), so for every file
``rows_read == len(observations) + len(rejected_rows)``. A file that cannot be used at all
(unreadable, empty, unknown shape, missing or duplicate columns) gets ``file_error`` instead.

Timestamps are ISO 8601 strings, with or without an offset (naive means UTC, offsets may differ
from line to line), or epoch seconds (integer or decimal). They are stored as
``datetime64[us, UTC]``.

The package, by concern (each module reads top to bottom):

``discovery``
    which files of the folder are landing files (suffixes, hidden names, symbolic links).
``shapes``
    the result type (:class:`FileRead`) and the shape recognised from a header.
``csv_records``
    CSV bytes -> records: regular lines through Arrow, the others through the csv module.
``columns``, ``timestamps``
    typed columns and vectorised text helpers; timestamps parsed once per distinct string.
``tidy``
    records -> observations and rejections (numbers, names, duplicates within a file).
``parquet``, ``reading``
    Parquet columns by type; :func:`read_file` and :func:`observation_days` for one file.
``batching``
    many files as flat arrays (:func:`read_batch`, :func:`iter_batches`): plain CSV files that
    share a header are parsed as one, with the same result as :func:`read_file` of each.
``labels``
    labels files (known anomaly windows).
"""

from anomaly_assets.landing.batching import BatchRead, iter_batches, read_batch
from anomaly_assets.landing.discovery import SUFFIXES, Discovery, LandingError, Refused, discover, discover_files, entity_from_path
from anomaly_assets.landing.labels import read_labels
from anomaly_assets.landing.reading import FileDays, observation_days, read_file
from anomaly_assets.landing.shapes import FileRead

__all__ = [
    "SUFFIXES",
    "FileRead",
    "FileDays",
    "LandingError",
    "discover",
    "discover_files",
    "Discovery",
    "Refused",
    "entity_from_path",
    "observation_days",
    "read_file",
    "read_batch",
    "iter_batches",
    "BatchRead",
    "read_labels",
]
