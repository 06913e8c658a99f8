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
import io
import os
import os.path as osp
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import pandas as pd

import pyg_mmrec
from pyg_mmrec.data.hetero import FEATURE_FILES, MODALITIES
from pyg_mmrec.data.sampling import check_negatives
from pyg_mmrec.errors import ConfigError, DatasetError, OutputError, describe
from pyg_mmrec.io import current_umask
from pyg_mmrec.prepare import features as feat
from pyg_mmrec.prepare import recipe as rcp
# Re-exported: the options and the output checks were defined here before
# prepare.config and prepare.output existed.
from pyg_mmrec.prepare.config import (  # noqa: F401
    PrepareConfig,
    config_from_recipe,
    option_flag,
    recipe_field,
    validate_config,
)
from pyg_mmrec.prepare.hashing import bytes_sha256, tree_sha256
from pyg_mmrec.prepare.kcore import kcore_mask
from pyg_mmrec.prepare.output import check_inputs_outside, check_output
from pyg_mmrec.prepare.split import (
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VAL,
    resolve_cold_items,
    split_interactions,
)
from pyg_mmrec.prepare.tables import (
    parse_ids,
    parse_numbers,
    parse_timestamps,
    read_table,
    require_columns,
    text_of,
)


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


# Building ####################################################################


class _Sources(NamedTuple):
    r"""Where the features of each modality come from."""
    modality: Dict[str, str]  # 'features', 'encoders' or 'text_columns'
    encoders: Dict[str, Callable]  # the resolved callables
    text_model: Optional[str]  # the model folder, with text columns


class _Remapped(NamedTuple):
    r"""The interactions of the output, with their new ids."""
    frame: pd.DataFrame  # raw ids (and timestamp, rating), one row each
    codes: np.ndarray  # TRAIN, VAL or TEST of each row
    raw_users: np.ndarray  # ascending: a user's new id is its position
    user_index: np.ndarray  # the new user id of each row
    raw_items: np.ndarray  # ascending: an item's new id is its position
    item_index: np.ndarray  # the new item id of each row


class _KeptItems(NamedTuple):
    r"""The items of the output, in new id order."""
    raw_ids: np.ndarray  # ascending, as their new ids
    rows: np.ndarray  # their rows in the item table
    table: pd.DataFrame  # those rows, every column
    table_size: int  # rows of the whole item table
    path: str  # the item table

    def name(self, index: int) -> str:
        r"""Names the item of new id :obj:`index` in messages."""
        return (f"item '{self.raw_ids[index]}', row {self.rows[index]} of "
                f'{self.path}')


def _resolve_sources(config: PrepareConfig,
                     encoders: Optional[Dict[str, Callable]]) -> _Sources:
    r"""Checks :obj:`config` and resolves its encoders (those in
    :obj:`encoders` replace the resolution of their ``config.encoders``)
    and its text model."""
    sources = validate_config(config)
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
            raise ConfigError(f"{option_flag('text_model')} '{text_model}' "
                              'is not a model folder: only local models are '
                              'used')
    return _Sources(sources, resolved, text_model)


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


def _filtered_interactions(frame: pd.DataFrame, item_ids: pd.Series,
                           config: PrepareConfig, stats: Dict[str, int]
                           ) -> pd.DataFrame:
    r"""Steps 3 and 4: drops the interactions with items absent from the
    item table (:obj:`item_ids`), then those outside the k-core, and counts
    them in :obj:`stats`. Refuses to go on with no interactions left."""
    if frame.empty:
        raise _empty_error(config, stats, 'reading' if
                           config.rating_threshold is None else
                           'the rating threshold')
    known = frame['item'].isin(set(item_ids.tolist())).to_numpy()
    stats['unknown_items_removed'] = int((~known).sum())
    if not known.all():
        # Often a mismatch of id columns or a stale item table rather than
        # a few retired items: say so, not only in the --json summary.
        first = frame['item'][~known].iloc[0]
        warnings.warn(
            f"{config.interactions}: removed "
            f"{stats['unknown_items_removed']} of {len(frame)} interactions "
            f"whose item is not in the item table {config.items} (first: "
            f"'{first}')", stacklevel=3)
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
    return frame


def _split_and_remap(frame: pd.DataFrame, config: PrepareConfig,
                     stats: Dict[str, int]) -> _Remapped:
    r"""Steps 5 and 6: the split and the cold-item policy (counted in
    :obj:`stats`), then the new ids; refuses what the reader would."""
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
    raw_users, user_index = np.unique(frame['user'].to_numpy(),
                                      return_inverse=True)
    raw_items, item_index = np.unique(frame['item'].to_numpy(),
                                      return_inverse=True)
    data = _Remapped(frame, codes, raw_users, user_index, raw_items,
                     item_index)
    _check_loadable(config, data, cold)
    return data


def _check_loadable(config: PrepareConfig, data: _Remapped,
                    cold: int) -> None:
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
        if not (data.codes == code).any():
            raise DatasetError(
                config.interactions, f'the {split} split is empty after '
                f'splitting ({len(data.frame)} interactions, '
                f'split={config.split}, ratios={list(config.ratios)}' +
                (f'; {policy}' if policy else '') + '): users need more '
                'interactions (raise the k-core) or larger held-out shares')
    num_items = len(data.raw_items)

    def every_item(user: int, others: int) -> DatasetError:
        more = f' (and {others} other users)' if others else ''
        return DatasetError(
            config.interactions, f"user '{data.raw_users[user]}'{more} has "
            f'a training interaction with every one of the {num_items} '
            'items left after filtering and splitting' +
            (f' ({policy})' if policy else '') + ', so no negative item can '
            'be sampled for it in training; remove such users from the '
            'interactions table or keep more items')

    check_negatives(data.user_index[data.codes == TRAIN], num_items,
                    every_item)


def _kept_items(config: PrepareConfig, items: pd.DataFrame,
                item_ids: pd.Series, raw_ids: np.ndarray) -> _KeptItems:
    r"""The rows of the item table :obj:`items` (ids :obj:`item_ids`) of the
    items :obj:`raw_ids`, in that order."""
    rows = pd.Index(item_ids).get_indexer(raw_ids)
    return _KeptItems(raw_ids, rows, items.iloc[rows].reset_index(drop=True),
                      len(items), config.items)


def _item_features(config: PrepareConfig, sources: _Sources,
                   items: _KeptItems
                   ) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    r"""Step 7: ``(arrays, inputs)``, the feature matrix of each modality
    (one row per kept item, in new id order) and what the recipe records
    of their sources under ``inputs``."""
    arrays: Dict[str, np.ndarray] = {}
    inputs: Dict[str, Any] = {'features': {}, 'encoders': {},
                              'text_model': None}
    for modality in MODALITIES:
        source = sources.modality.get(modality)
        if source == 'features':
            path = config.features[modality]
            arrays[modality] = feat.load_precomputed(
                path, modality, items.table_size, items.rows)
            inputs['features'][modality] = rcp.file_record(path)
        elif source == 'encoders':
            spec = config.encoders[modality]
            encoder = sources.encoders[modality]
            info = feat.describe_encoder(encoder)
            if isinstance(spec, str):  # named: importable by that name
                info.update(callable=_absolute_spec(spec), importable=True)
            inputs['encoders'][modality] = info
            arrays[modality] = feat.run_encoder(
                encoder, items.table, modality, info['callable'],
                config.encoder_batch_size, items.name)
        elif source == 'text_columns':
            texts = text_of(items.table, list(config.text_columns))
            encoded = feat.encode_text(texts, sources.text_model,
                                       config.text_batch_size, config.device)
            arrays[modality] = feat.check_text_features(
                encoded, len(texts), sources.text_model, items.name)
            inputs['text_model'] = {
                'path': osp.abspath(sources.text_model),
                'sha256': tree_sha256(sources.text_model),
            }
    return arrays, inputs


def _output_files(config: PrepareConfig, data: _Remapped,
                  items: _KeptItems, arrays: Dict[str, np.ndarray]
                  ) -> Dict[str, bytes]:
    r"""The bytes of every output file but ``recipe.json``."""
    files: Dict[str, bytes] = {}
    interactions = pd.DataFrame({
        'user': data.user_index.astype(np.int64),
        'item': data.item_index.astype(np.int64),
        'split': np.asarray(SPLIT_NAMES)[data.codes],
    })
    for column in ('timestamp', 'rating'):
        if column in data.frame:
            interactions[column] = data.frame[column].to_numpy()
    interactions = interactions.sort_values(['user', 'item'], kind='stable')
    files['interactions.csv'] = _csv_bytes(interactions)
    files['users.csv'] = _csv_bytes(pd.DataFrame({
        'user': np.arange(len(data.raw_users), dtype=np.int64),
        'raw_id': data.raw_users}))
    id_col = config.item_id_col or config.item_col
    meta = items.table.drop(columns=[id_col])
    meta.columns = [f'meta_{c}' if c in ('item', 'raw_id') else c
                    for c in meta.columns]
    files['items.csv'] = _csv_bytes(pd.concat([
        pd.DataFrame({'item': np.arange(len(data.raw_items), dtype=np.int64),
                      'raw_id': data.raw_items}), meta], axis=1))
    for modality, array in arrays.items():
        files[FEATURE_FILES[modality]] = _npy_bytes(array)
    return files


def _recipe(config: PrepareConfig, stats: Dict[str, int], data: _Remapped,
            arrays: Dict[str, np.ndarray], feature_inputs: Dict[str, Any],
            files: Dict[str, bytes]) -> Dict[str, Any]:
    r"""The recipe of the build (see :mod:`pyg_mmrec.prepare.recipe`):
    :obj:`feature_inputs` are the sources of the features, :obj:`files`
    the other output files."""
    counts = {name: int((data.codes == code).sum())
              for code, name in ((TRAIN, 'train'), (VAL, 'val'),
                                 (TEST, 'test'))}
    return {
        'format': rcp.RECIPE_FORMAT,
        'tool': 'pyg-mmrec prepare',
        'library_version': pyg_mmrec.__version__,
        'environment': _environment(bool(config.text_columns)),
        'inputs': {
            'interactions': rcp.file_record(config.interactions),
            'items': rcp.file_record(config.items),
            **feature_inputs,
        },
        'options': config.options(),
        'result': {
            **stats,
            'num_users': int(len(data.raw_users)),
            'num_items': int(len(data.raw_items)),
            'interactions': counts,
            'feature_dims': {m: int(a.shape[1]) for m, a in arrays.items()},
        },
        'outputs': {name: bytes_sha256(content)
                    for name, content in files.items()},
    }


def build(config: PrepareConfig,
          encoders: Optional[Dict[str, Callable]] = None
          ) -> Tuple[Dict[str, bytes], Dict[str, Any]]:
    r"""Builds the data set in memory: returns ``(files, recipe)`` where
    :obj:`files` maps file names to their bytes (``recipe.json`` included).

    :obj:`encoders` are resolved callables (by modality) that replace the
    resolution of :obj:`config.encoders` (used when rebuilding a recipe whose
    encoders are not importable).
    """
    # Resolve callables and the text model before reading data: a typo in
    # an option should not cost a pass over a large table.
    sources = _resolve_sources(config, encoders)
    frame, stats = _interactions_frame(config)
    items, item_ids = _items_frame(config)
    frame = _filtered_interactions(frame, item_ids, config, stats)
    data = _split_and_remap(frame, config, stats)
    kept = _kept_items(config, items, item_ids, data.raw_items)
    arrays, feature_inputs = _item_features(config, sources, kept)
    files = _output_files(config, data, kept, arrays)
    recipe = _recipe(config, stats, data, arrays, feature_inputs, files)
    files[rcp.RECIPE_FILE] = rcp.dumps(recipe)
    return files, recipe


def _absolute_spec(spec: str) -> str:
    module, _, attr = spec.rpartition(':')
    if module.endswith('.py'):
        return f'{osp.abspath(module)}:{attr}'
    return spec


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


# Writing #####################################################################


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
