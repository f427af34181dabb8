"""Labels files: known anomaly windows, checked line by line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_assets.landing.csv_records import _general_records, _read_bytes
from anomaly_assets.landing.discovery import LandingError
from anomaly_assets.landing.shapes import _clean_name, _quote, _str_array, _ts_series, _Unusable
from anomaly_assets.landing.timestamps import _parse_timestamps

LABEL_COLUMNS = ("entity_id", "start", "end", "metrics")


def read_labels(path: Path) -> pd.DataFrame:
    """Read a labels file: known anomaly windows.

    The file is CSV with the header ``entity_id,start,end,metrics`` (any order, other columns
    ignored); ``start`` and ``end`` are timestamps like those of the landing files (naive =
    UTC) and ``metrics`` is a ``;``-separated list of metric names (empty: no particular one).

    Returns
    -------
    pandas.DataFrame
        ``entity_id`` (str), ``start`` and ``end`` (datetime64[us, UTC]), ``metrics``
        (object: list[str]), one row per window, in file order.

    Raises
    ------
    LandingError
        Naming the file, line, field and value of the first bad row (and how many more
        problems there are).
    """
    path = Path(path)
    where = str(path)
    try:
        records = _general_records(_read_bytes(path))
    except _Unusable as problem:
        raise LandingError(f"{where}: {problem}") from None
    names = [_clean_name(h).lower() for h in records.header]
    missing = [c for c in LABEL_COLUMNS if c not in names]
    if missing:
        raise LandingError(
            f"{where}: missing column(s) {', '.join(missing)} (found header "
            f"{_quote(records.raw_header)}); expected {','.join(LABEL_COLUMNS)}"
        )
    col = {c: names.index(c) for c in LABEL_COLUMNS}
    lines = records.line_numbers
    problems = list(zip(records.pre_lines.tolist(), records.pre_reasons.tolist()))
    cell = {c: np.asarray(records.columns[col[c]], dtype=object) for c in LABEL_COLUMNS}
    entity = np.asarray([v.strip() for v in cell["entity_id"]], dtype=object)
    for i in np.flatnonzero(entity == ""):
        problems.append((int(lines[i]), "field 'entity_id' is empty"))
    bounds = {}
    bad_bound = np.zeros(len(lines), dtype=bool)
    for field in ("start", "end"):
        parsed = _parse_timestamps(cell[field])
        bounds[field] = parsed.us
        bad_bound |= parsed.rejected
        for i in np.flatnonzero(parsed.rejected):
            reason = parsed.reasons[i]
            if reason == "missing timestamp":
                message = f"field '{field}' is empty"
            else:
                message = reason.replace("timestamp", f"field '{field}' value", 1)
            problems.append((int(lines[i]), message))
    for i in np.flatnonzero((bounds["end"] < bounds["start"]) & ~bad_bound):
        problems.append(
            (
                int(lines[i]),
                f"field 'end' value '{cell['end'][i].strip()}' is before start "
                f"'{cell['start'][i].strip()}'",
            )
        )
    if problems:
        problems.sort()
        line, message = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LandingError(f"{where} line {line}: {message}{more}")
    metrics = [[m.strip() for m in v.split(";") if m.strip()] for v in cell["metrics"]]
    return pd.DataFrame(
        {
            "entity_id": _str_array(entity),
            "start": _ts_series(bounds["start"]),
            "end": _ts_series(bounds["end"]),
            "metrics": pd.Series(metrics, dtype=object),
        }
    )
