r"""The ``recipe.json`` that records how a data set was prepared.

A recipe holds, and only holds, what determines the output bytes:

* ``inputs``: absolute path, size and SHA-256 of every input file (the two
  tables, precomputed feature arrays), a checksum of the text model folder
  and the name and source checksum of every encoder callable;
* ``options``: every option of :class:`~pyg_mmrec.prepare.PrepareConfig`;
* ``library_version`` and the versions of the packages that shape the bytes;
* ``result`` (counts) and ``outputs`` (SHA-256 of every other file written).

It holds no date, host name or output path, so rebuilding a recipe into
another folder (:func:`~pyg_mmrec.prepare.rebuild`) writes the same bytes,
``recipe.json`` included. The recipe is written with sorted keys.
"""
import json
import os.path as osp
from typing import Any, Dict, Optional

from pyg_mmrec.errors import ConfigError, DatasetError
from pyg_mmrec.prepare.hashing import file_sha256

RECIPE_FILE = 'recipe.json'
RECIPE_FORMAT = 1


def file_record(path: str) -> Dict[str, Any]:
    r"""``{path, bytes, sha256}`` of an input file."""
    path = osp.abspath(path)
    return {'path': path, 'bytes': osp.getsize(path),
            'sha256': file_sha256(path)}


def dumps(recipe: Dict[str, Any]) -> bytes:
    r"""The canonical bytes of a recipe (sorted keys, two-space indent)."""
    return (json.dumps(recipe, indent=2, sort_keys=True) + '\n').encode()


def load_recipe(path: str) -> Dict[str, Any]:
    r"""Reads and checks the shape of a ``recipe.json``."""
    try:
        with open(path) as f:
            recipe = json.load(f)
    except FileNotFoundError:
        raise DatasetError(path, 'file not found') from None
    except (OSError, ValueError) as e:
        raise DatasetError(path, f'cannot be read as JSON ({e})') from None
    if not isinstance(recipe, dict) or recipe.get('format') != RECIPE_FORMAT:
        raise DatasetError(path, f'not a pyg-mmrec prepare recipe (expected '
                           f'"format": {RECIPE_FORMAT})')
    for key in ('inputs', 'options'):
        if not isinstance(recipe.get(key), dict):
            raise DatasetError(path, f"recipe has no '{key}' object")
    inputs = recipe['inputs']
    for key in ('interactions', 'items'):
        if not isinstance(inputs.get(key), dict) or \
                not isinstance(inputs[key].get('path'), str):
            raise DatasetError(path, f"recipe has no inputs.{key}.path")
    for key, needed in (('features', 'path'), ('encoders', 'callable')):
        records = inputs.get(key) or {}
        if not isinstance(records, dict) or not all(
                isinstance(r, dict) and isinstance(r.get(needed), str)
                for r in records.values()):
            raise DatasetError(path, f'recipe inputs.{key} must map each '
                               f"modality to a record with a '{needed}'")
    model = inputs.get('text_model')
    if model is not None and not (isinstance(model, dict) and all(
            isinstance(model.get(k), str) for k in ('path', 'sha256'))):
        raise DatasetError(path, "recipe inputs.text_model must have a "
                           "'path' and a 'sha256'")
    if 'outputs' in recipe and valid_outputs(recipe['outputs']) is None:
        raise DatasetError(path, 'recipe outputs must map each file name to '
                           'its SHA-256')
    return recipe


def valid_outputs(outputs: Any) -> Optional[Dict[str, str]]:
    r"""The ``outputs`` of a recipe (file name -> SHA-256), or :obj:`None`
    if they do not have that shape."""
    if isinstance(outputs, dict) and all(
            isinstance(k, str) and isinstance(v, str)
            for k, v in outputs.items()):
        return outputs
    return None


def recorded_outputs(path: str) -> Optional[Dict[str, str]]:
    r"""The ``outputs`` recorded in the recipe file :obj:`path`, or
    :obj:`None` if it cannot be read or records none."""
    try:
        with open(path) as f:
            recipe = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(recipe, dict):
        return None
    return valid_outputs(recipe.get('outputs'))


def verify_file(record: Dict[str, Any], path: Optional[str] = None,
                what: str = 'input') -> str:
    r"""Checks that the file at :obj:`path` (default: the recorded path)
    still has the recorded checksum; returns the path."""
    path = path or record['path']
    if not osp.isfile(path):
        raise DatasetError(path, f'{what} of the recipe not found')
    if file_sha256(path) != record.get('sha256'):
        raise DatasetError(
            path, f'{what} differs from the one the recipe was made from '
            f'(SHA-256 mismatch): the rebuild would not be the same data set')
    return path


def check_options(options: Dict[str, Any], known: Dict[str, Any],
                  path: str) -> None:
    r"""Rejects recipes with options this version does not know."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown recipe option(s) "
                          f"{', '.join(unknown)} (made by a newer "
                          f'pyg-mmrec?)')
