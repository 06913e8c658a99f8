r"""The HeteroData contract helpers of :mod:`pyg_mmrec.data.hetero`."""
import warnings

import pytest
import torch
from torch_geometric.data import HeteroData

from pyg_mmrec.data.hetero import (
    INTERACTS,
    num_users_items,
    require_modalities,
)


def _hand_made(users=True, items=True):
    data = HeteroData()
    if users:
        data['user'].num_nodes = 3
    if items:
        data['item'].num_nodes = 4
    data['item'].visual = torch.randn(4, 2)
    data[INTERACTS].edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    return data


def test_num_users_items():
    assert num_users_items(_hand_made()) == (3, 4)
    data = HeteroData()  # PyG infers the count from x
    data['user'].x = torch.randn(2, 1)
    data['item'].x = torch.randn(5, 1)
    assert num_users_items(data) == (2, 5)


# Used to fail with "TypeError: int() argument must be ... not 'NoneType'"
# in every transform and model.
@pytest.mark.parametrize('users, items, message', [
    (True, False, "data['item'].num_nodes is not set; set it to the number "
     "of items (data['item'].num_nodes = ...)"),
    (False, True, "data['user'].num_nodes is not set; set it to the number "
     "of users (data['user'].num_nodes = ...)"),
    (False, False, "data['user'].num_nodes is not set"),
])
def test_missing_node_count_is_a_clear_error(users, items, message):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # and no PyG warning before it
        with pytest.raises(ValueError) as info:
            num_users_items(_hand_made(users, items))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize('visual,problem', [
    # The models failed with "'item_feat' has shape [3, 4] but 'item_emb'
    # has shape [4, 4]" (DiffMM) or "adjacency expects 4 source nodes"
    # (MMSSL), naming no modality.
    (torch.randn(3, 2), "item features of modality 'visual' have 3 rows "
     "but the data has 4 items"),
    (torch.randn(4), r"item features of modality 'visual' must be a "
     r"floating-point \[items, F\] tensor \(got 1-D torch.float32\)"),
    (torch.ones(4, 2, dtype=torch.long), r"must be a floating-point "
     r"\[items, F\] tensor \(got 2-D torch.int64\)"),
])
def test_require_modalities_checks_the_features(visual, problem):
    data = _hand_made()
    require_modalities(data, ['visual'])
    data['item'].visual = visual
    with pytest.raises(ValueError, match=problem):
        require_modalities(data, ['visual'])
