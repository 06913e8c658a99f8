r"""``dataset_statistics`` and ``write_degree_plot`` on a hand-made graph."""
import json
import math
import os

import pytest
import torch
from torch_geometric.data import HeteroData

from pyg_mmrec.prepare import dataset_statistics, format_statistics, \
    write_degree_plot


@pytest.fixture
def data():
    d = HeteroData()
    d['user'].num_nodes = 4
    d['item'].num_nodes = 5
    store = d['user', 'interacts', 'item']
    # Training degrees: users [2, 1, 1, 0], items [1, 2, 1, 0, 0].
    store.edge_index = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 2]])
    store.val_edge_index = torch.tensor([[3, 1], [0, 0]])
    store.test_edge_index = torch.tensor([[0, 3], [3, 4]])
    d['item'].visual = torch.tensor([[0., 0.], [3., 4.], [1., 1.], [0., 0.],
                                     [-1., 2.]])
    d['item'].textual = torch.ones(5, 3)
    return d


def test_statistics(data):
    s = dataset_statistics(data)
    json.dumps(s)  # serialisable as is
    assert (s['num_users'], s['num_items']) == (4, 5)
    assert s['interactions'] == {'train': 4, 'val': 2, 'test': 2,
                                 'total': 8}
    assert s['density'] == pytest.approx(8 / 20)
    assert s['sparsity'] == pytest.approx(12 / 20)
    assert s['degree']['user'] == {'min': 0, 'max': 2, 'mean': 1.0,
                                   'median': 1.0, 'p90': pytest.approx(1.7),
                                   'p99': pytest.approx(1.97), 'zero': 1}
    assert s['degree']['item']['zero'] == 2
    assert s['degree']['item']['max'] == 2
    assert s['cold'] == {
        'val': {'users': 1, 'items': 0, 'interactions': 1},
        'test': {'users': 1, 'items': 2, 'interactions': 2},
    }
    vis = s['features']['visual']
    assert vis['dim'] == 2 and vis['zero_rows'] == 2
    assert vis['min'] == -1.0 and vis['max'] == 4.0
    assert vis['mean'] == pytest.approx(1.0)
    assert vis['mean_row_norm'] == pytest.approx(
        (0 + 5 + math.sqrt(2) + 0 + math.sqrt(5)) / 5)
    assert vis['nonfinite_values'] == 0
    assert list(s['features']) == ['visual', 'textual']
    text = format_statistics(s)
    assert 'users 4, items 5, interactions 8' in text
    assert 'cold in test: 1 users, 2 items, 2 interactions' in text


def test_nonfinite_features_are_counted(data):
    data['item'].visual[1, 0] = float('nan')
    values = data['item'].visual.double()
    vis = dataset_statistics(data)['features']['visual']
    assert vis['nonfinite_values'] == 1
    # The statistics of the finite values.
    finite = values[torch.isfinite(values)]
    assert vis['mean'] == pytest.approx(float(finite.mean()))
    assert vis['min'] == float(finite.min())
    assert vis['max'] == float(finite.max())


def test_degree_plot(data, tmp_path):
    path = tmp_path / 'plots' / 'degrees.png'
    write_degree_plot(data, str(path))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.listdir(tmp_path / 'plots') == ['degrees.png']  # no temp left


def test_large_finite_features_give_finite_statistics(data):
    # float32 squares of 1e30 overflow: the std and norms were inf, which
    # json.dumps writes as the invalid token Infinity.
    data['item'].visual = data['item'].visual * 1e30
    vis = dataset_statistics(data)['features']['visual']
    json.dumps(vis, allow_nan=False)
    assert vis['mean_row_norm'] == pytest.approx(
        1e30 * (0 + 5 + math.sqrt(2) + 0 + math.sqrt(5)) / 5)
