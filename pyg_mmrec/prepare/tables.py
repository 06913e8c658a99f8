r"""Reading and validating the raw input tables of :mod:`pyg_mmrec.prepare`.

Two tables go in:

* the **interactions** table (CSV, TSV or Parquet): one row per
  (user, item) event, with optional rating and timestamp columns;
* the **item** table (same formats): one row per item, with the item id and
  any raw content (text columns, image paths or URLs, ...).

Every check of a file raises :class:`~pyg_mmrec.errors.DatasetError` naming
the file and the problem (an invalid option, such as an unknown ``--ids``
type, raises :class:`~pyg_mmrec.errors.ConfigError`); nothing here writes to
disk.
"""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from pyg_mmrec.errors import ConfigError, DatasetError

ID_TYPES = ('int', 'str')

_CSV_SUFFIXES = ('.csv', '.csv.gz')
_TSV_SUFFIXES = ('.tsv', '.tsv.gz')
_PARQUET_SUFFIXES = ('.parquet', '.pq')


def read_table(path: str, id_columns: Sequence[str] = ()) -> pd.DataFrame:
    r"""Reads a CSV/TSV/Parquet table with pandas.

    Id columns of CSV/TSV files are read as strings, so that values such as
    ``007`` or ``B000123`` survive unchanged and the id type is decided by
    :func:`parse_ids`, not by pandas' type inference.
    """
    lower = path.lower()
    if not osp.isfile(path):
        raise DatasetError(path, 'file not found')
    try:
        if lower.endswith(_PARQUET_SUFFIXES):
            frame = pd.read_parquet(path)
        elif lower.endswith(_CSV_SUFFIXES + _TSV_SUFFIXES):
            sep = '\t' if lower.endswith(_TSV_SUFFIXES) else ','
            # Only request string dtype for id columns that exist: read the
            # header first (cheap) instead of failing inside read_csv.
            header = pd.read_csv(path, sep=sep, nrows=0).columns
            dtype = {c: str for c in id_columns if c in header}
            frame = pd.read_csv(path, sep=sep, dtype=dtype)
        else:
            raise DatasetError(
                path, 'unsupported table format (expected .csv, .tsv, '
                '.parquet or .pq, optionally .csv.gz/.tsv.gz)')
    except DatasetError:
        raise
    except Exception as e:  # pandas/pyarrow raise many exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        reason = first or type(e).__name__
        raise DatasetError(path, f'cannot be read as a table ({reason})') \
            from None
    return frame


def require_columns(path: str, frame: pd.DataFrame,
                    columns: Sequence[Optional[str]]) -> None:
    r"""Raises one error listing every missing column."""
    wanted = [c for c in columns if c is not None]
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        found = ', '.join(map(str, frame.columns)) or 'none'
        raise DatasetError(
            path, f"missing column(s) {', '.join(missing)} "
            f"(found: {found})")


def parse_ids(path: str, frame: pd.DataFrame, column: str,
              id_type: str) -> pd.Series:
    r"""Returns the ids in :obj:`column` as ``int64`` (``id_type='int'``) or
    ``str`` values, rejecting missing values and, for ``'int'``, anything
    that is not an integer."""
    if id_type not in ID_TYPES:
        raise ConfigError(f"--ids must be one of {', '.join(ID_TYPES)}, "
                          f"got '{id_type}'")
    values = frame[column]
    missing = values.isna().to_numpy()
    if missing.any():
        raise DatasetError(
            path, f"column '{column}' has {int(missing.sum())} missing ids "
            f"(first on data row {int(np.flatnonzero(missing)[0])})")
    if id_type == 'str':
        return values.astype(str).reset_index(drop=True)
    if pd.api.types.is_integer_dtype(values) and \
            not pd.api.types.is_bool_dtype(values):
        return values.astype(np.int64).reset_index(drop=True)
    # Strings (CSV) or floats (Parquet): accept only exact integers.
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors='coerce')
    bad = numbers.isna().to_numpy()
    if not bad.any():
        as_float = numbers.to_numpy(dtype=np.float64)
        bad = (as_float != np.round(as_float)) | ~np.isfinite(as_float) | \
            (np.abs(as_float) > 2**53)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            path, f"column '{column}' has {int(bad.sum())} non-numeric ids "
            f"but integer ids were declared (first: '{text.iloc[row]}' on "
            f"data row {row}); use --ids str for string ids")
    return pd.Series(numbers.to_numpy(dtype=np.float64).astype(np.int64),
                     name=column)


def parse_numbers(path: str, frame: pd.DataFrame, column: str,
                  what: str) -> np.ndarray:
    r"""Returns :obj:`column` as ``float64``, rejecting non-numeric or
    missing values."""
    values = pd.to_numeric(frame[column], errors='coerce')
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            path, f"column '{column}' ({what}) has {int(bad.sum())} missing "
            f"or non-numeric values (first: '{frame[column].iloc[row]}' on "
            f"data row {row})")
    return values.to_numpy(dtype=np.float64)


def parse_timestamps(path: str, frame: pd.DataFrame,
                     column: str) -> np.ndarray:
    r"""Returns :obj:`column` as ``int64`` or ``float64`` sort keys: numbers
    are kept (Unix times, step counts); otherwise the values must parse as
    dates and become nanoseconds since the epoch."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values) and \
            not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values)
        if not numbers.isna().any():
            if pd.api.types.is_integer_dtype(numbers):
                return numbers.to_numpy(dtype=np.int64)
            return numbers.to_numpy(dtype=np.float64)
    elif pd.api.types.is_datetime64_any_dtype(values):
        if not values.isna().any():
            return _nanoseconds(values)
    else:
        numbers = pd.to_numeric(values, errors='coerce')
        if not numbers.isna().any():
            return numbers.to_numpy(dtype=np.float64)
        try:
            dates = pd.to_datetime(values.astype(str), errors='coerce',
                                   utc=True, format='mixed')
        except (ValueError, TypeError):
            dates = None
        if dates is not None and not dates.isna().any():
            return _nanoseconds(dates)
    raise DatasetError(
        path, f"column '{column}' (timestamp) has missing values or values "
        "that are neither numbers nor dates")


def _nanoseconds(dates: pd.Series) -> np.ndarray:
    # pandas picks the resolution (s, ms, us, ns) from the data: convert to
    # UTC nanoseconds explicitly so the integers mean the same thing always.
    if getattr(dates.dt, 'tz', None) is not None:
        dates = dates.dt.tz_convert('UTC').dt.tz_localize(None)
    return dates.astype('datetime64[ns]').to_numpy().astype(np.int64)


def text_of(frame: pd.DataFrame, columns: List[str]) -> List[str]:
    r"""One string per row: the non-empty values of :obj:`columns` joined by
    newlines (missing values count as empty)."""
    parts = [frame[c].fillna('').astype(str).str.strip() for c in columns]
    out = []
    for row in zip(*parts):
        out.append('\n'.join(p for p in row if p))
    return out
