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
        if pd.api.types.is_unsigned_integer_dtype(values):
            # A cast would turn ids above 2**63-1 into negative ones.
            big = (values.to_numpy(np.uint64) > _INT64_MAX)
            if big.any():
                raise _out_of_range(path, column, big,
                                    values.astype(str).to_numpy())
        return values.astype(np.int64).reset_index(drop=True)
    # Strings (CSV) or floats (Parquet): accept only exact integers.
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors='coerce')
    if numbers.dtype == np.int64:
        # Integer text parsed exactly (no float64 round trip, which would
        # corrupt ids above 2**53).
        return pd.Series(numbers.to_numpy(), name=column)
    return pd.Series(_exact_ints(path, column, text, numbers), name=column)


_INT64_MAX = int(np.iinfo(np.int64).max)
_INTEGER_TEXT = r'[+-]?[0-9]+'


def _exact_ints(path: str, column: str, text: pd.Series,
                numbers: pd.Series) -> np.ndarray:
    r"""The ids :obj:`text` (parsed by pandas into :obj:`numbers`, not all
    as ``int64``) as exact ``int64``: integer text is parsed with Python's
    unbounded integers and must fit in ``int64``; other text must be a
    number that is an integer exactly representable as a float (e.g.
    ``3.0`` from a float column)."""
    out = np.zeros(len(text), dtype=np.int64)
    is_int = text.str.fullmatch(_INTEGER_TEXT).to_numpy(dtype=bool)
    ints = [int(t) for t in text.to_numpy()[is_int]]
    big = np.zeros(len(text), dtype=bool)
    big[is_int] = [not -_INT64_MAX - 1 <= i <= _INT64_MAX for i in ints]
    if big.any():
        raise _out_of_range(path, column, big, text.to_numpy())
    out[is_int] = ints
    as_float = numbers.to_numpy(dtype=np.float64)[~is_int]
    # NaN (not a number) compares unequal to itself: rejected too.
    bad_float = ~((as_float == np.round(as_float)) &
                  (np.abs(as_float) <= 2**53))
    bad = np.zeros(len(text), dtype=bool)
    bad[~is_int] = bad_float
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            path, f"column '{column}' has {int(bad.sum())} non-numeric ids "
            f"but integer ids were declared (first: '{text.iloc[row]}' on "
            f"data row {row}); use --ids str for string ids")
    out[~is_int] = as_float[~bad_float].astype(np.int64)
    return out


def _out_of_range(path: str, column: str, bad: np.ndarray,
                  text: np.ndarray) -> DatasetError:
    row = int(np.flatnonzero(bad)[0])
    return DatasetError(
        path, f"column '{column}' has {int(bad.sum())} integer ids outside "
        f"the int64 range -2**63..2**63-1 (first: '{text[row]}' on data "
        f'row {row}); use --ids str for such ids')


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
