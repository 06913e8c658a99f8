r"""Full-ranking evaluation against metrics computed by hand from the
definitions in MODELS.md (Evaluation)."""
import math
import re

import pytest
import torch
from torch_geometric.data import HeteroData

from pyg_mmrec.evaluation import RankingEvaluator
from pyg_mmrec.nn.models.base import Recommender

# 3 users, 6 items.
#   user 0: train {0}, val {1},    test {2, 3}
#   user 1: train {1, 2}, val {},  test {0}
#   user 2: train {3}, val {4, 0}, test {}
TRAIN = [(0, 0), (1, 1), (1, 2), (2, 3)]
VAL = [(0, 1), (2, 0), (2, 4)]
TEST = [(0, 2), (0, 3), (1, 0)]
SCORES = torch.tensor([
    [9., 8., 1., 7., 6., 5.],
    [3., 9., 8., 1., 2., 5.],
    [1., 2., 3., 9., 4., 8.],
])


def _index(edges):
    return torch.tensor(edges, dtype=torch.long).t().contiguous()


def _data():
    data = HeteroData()
    data['user'].num_nodes = 3
    data['item'].num_nodes = 6
    store = data['user', 'interacts', 'item']
    store.edge_index = _index(TRAIN)
    store.val_edge_index = _index(VAL)
    store.test_edge_index = _index(TEST)
    return data


def scores(users):
    return SCORES[users]


def D(rank):  # the discount of a hit at 1-based rank
    return 1.0 / math.log2(rank + 1)


def IDCG(n):
    return sum(D(r) for r in range(1, n + 1))


# Validation, K=3. Training items are removed, validation items are not.
#   user 0: ranking 1, 3, 4 | 5, 2 -> hit at rank 1 of 1 held-out item
#   user 2: ranking 5, 4, 2 | 1, 0 -> hit (4) at rank 2 of 2 held-out items
#   user 1: no validation item -> not counted
VAL_3 = {
    'recall@3': (1 / 1 + 1 / 2) / 2,
    'precision@3': (1 / 3 + 1 / 3) / 2,
    'ndcg@3': (D(1) / IDCG(1) + D(2) / IDCG(2)) / 2,
}
# Test, K=3. Training and validation items are removed.
#   user 0: ranking 3, 4, 5 | 2 -> hit (3) at rank 1 of 2 held-out items
#   user 1: ranking 5, 0, 4 | 3 -> hit (0) at rank 2 of 1 held-out item
#   user 2: no test item -> not counted
TEST_3 = {
    'recall@3': (1 / 2 + 1 / 1) / 2,
    'precision@3': (1 / 3 + 1 / 3) / 2,
    'ndcg@3': (D(1) / IDCG(2) + D(2) / IDCG(1)) / 2,
}
# K=1: user 0 has 2 test items but the ideal DCG runs over min(2, 1) = 1.
VAL_1 = {'recall@1': (1 + 0) / 2, 'precision@1': (1 + 0) / 2,
         'ndcg@1': (1 + 0) / 2}
TEST_1 = {'recall@1': (1 / 2 + 0) / 2, 'precision@1': (1 + 0) / 2,
          'ndcg@1': (D(1) / IDCG(1) + 0) / 2}


def _assert_metrics(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize('batch_size', [1, 2, 1024])
def test_hand_computed_metrics(batch_size):
    evaluator = RankingEvaluator(_data(), ks=(3, 1), batch_size=batch_size)
    _assert_metrics(evaluator.evaluate(scores, 'val'), {**VAL_3, **VAL_1})
    _assert_metrics(evaluator.evaluate(scores, 'test'), {**TEST_3, **TEST_1})


def test_users_without_heldout_items_are_not_counted():
    evaluator = RankingEvaluator(_data(), ks=(3, ))
    assert evaluator.users_of('val').tolist() == [0, 2]
    assert evaluator.users_of('test').tolist() == [0, 1]
    # Even when asked for explicitly, user 1 does not count on validation.
    _assert_metrics(evaluator.evaluate(scores, 'val', torch.arange(3)),
                    VAL_3)
    _assert_metrics(evaluator.evaluate(scores, 'test', torch.arange(3)),
                    TEST_3)
    # A subset of users averages over that subset.
    only0 = evaluator.evaluate(scores, 'test', torch.tensor([0]))
    assert only0['recall@3'] == pytest.approx(0.5)
    assert only0['ndcg@3'] == pytest.approx(D(1) / IDCG(2))


def test_training_items_excluded_from_ranking():
    evaluator = RankingEvaluator(_data())
    top = evaluator.top_k(scores, torch.arange(3), 3, ['train'])
    assert top.tolist() == [[1, 3, 4], [5, 0, 4], [5, 4, 2]]
    top = evaluator.top_k(scores, torch.arange(3), 3, ['train', 'val'])
    assert top.tolist() == [[3, 4, 5], [5, 0, 4], [5, 2, 1]]
    assert evaluator.excluded_splits('val') == ['train']
    assert evaluator.excluded_splits('test') == ['train', 'val']


def test_perfect_and_worst_scores():
    data = _data()
    evaluator = RankingEvaluator(data, ks=(2, ))
    test = torch.zeros(3, 6)
    test[[0, 0, 1], [2, 3, 0]] = 1.0  # the test items on top
    perfect = evaluator.evaluate(lambda u: test[u], 'test')
    assert perfect == pytest.approx({'recall@2': 1.0, 'ndcg@2': 1.0,
                                     'precision@2': 0.75})
    worst = evaluator.evaluate(lambda u: -test[u], 'test')
    assert worst == pytest.approx({'recall@2': 0.0, 'ndcg@2': 0.0,
                                   'precision@2': 0.0})


def test_bad_arguments():
    evaluator = RankingEvaluator(_data())
    with pytest.raises(ValueError, match="split must be 'val' or 'test'"):
        evaluator.evaluate(scores, 'train')
    with pytest.raises(ValueError, match='scores must have shape'):
        evaluator.evaluate(lambda u: SCORES[u][:, :4], 'val')
    with pytest.raises(ValueError, match='cut-offs must be positive'):
        RankingEvaluator(_data(), ks=(0, ))
    # "range() arg 3 must not be zero", at the first evaluation.
    with pytest.raises(ValueError, match='batch_size must be >= 1, got 0'):
        RankingEvaluator(_data(), batch_size=0)


class _Fixed(Recommender):
    def forward(self, data):
        # user embeddings = one-hot, item embeddings = SCORES^T rows
        return torch.eye(3), SCORES.t().contiguous()


def test_recommend_excludes_seen_items():
    model = _Fixed(3, 6)
    data = _data()
    top = model.recommend(data, torch.tensor([0, 1, 2]), k=3)
    assert top.tolist() == [[1, 3, 4], [5, 0, 4], [5, 4, 2]]
    for user, row in enumerate(top.tolist()):
        assert not set(row) & {i for u, i in TRAIN if u == user}
    top = model.recommend(data, torch.tensor([0]), k=2, exclude_seen=False)
    assert top.tolist() == [[0, 1]]


def test_recommend_needs_only_training_edges():
    # The evaluator read every split up front: data with training edges
    # only failed with a bare KeyError: 'val_edge_index'.
    data = _data()
    del data['user', 'interacts', 'item'].val_edge_index
    del data['user', 'interacts', 'item'].test_edge_index
    top = _Fixed(3, 6).recommend(data, torch.tensor([0, 1, 2]), k=3)
    assert top.tolist() == [[1, 3, 4], [5, 0, 4], [5, 4, 2]]
    evaluator = RankingEvaluator(data, ks=[3])
    for split in ('val', 'test'):
        with pytest.raises(ValueError, match=re.escape(
                f"the data has no {split} edges ('{split}_edge_index' of "
                f"('user', 'interacts', 'item'))")):
            evaluator.evaluate(scores, split)
    # Test without validation edges: only training items are excluded.
    data['user', 'interacts', 'item'].test_edge_index = _index(TEST)
    evaluator = RankingEvaluator(data, ks=[3])
    assert evaluator.excluded_splits('test') == ['train']
    #   user 0: ranking 1, 3, 4 -> hit (3) at rank 2 of 2 test items
    #   user 1: ranking 5, 0, 4 -> hit (0) at rank 2 of 1 test item
    assert evaluator.evaluate(scores, 'test')['recall@3'] == \
        pytest.approx((1 / 2 + 1 / 1) / 2)


def test_cut_off_larger_than_the_number_of_items():
    # K=20 > 6 items: every non-excluded item is ranked, precision still
    # divides by K.
    #   user 0 (test): ranking 3, 4, 5, 2 -> hits at ranks 1 and 4
    #   user 1 (test): ranking 5, 0, 4, 3 -> hit at rank 2
    evaluator = RankingEvaluator(_data(), ks=(20, ))
    _assert_metrics(evaluator.evaluate(scores, 'test'), {
        'recall@20': (1 + 1) / 2,
        'precision@20': (2 / 20 + 1 / 20) / 2,
        'ndcg@20': ((D(1) + D(4)) / IDCG(2) + D(2) / IDCG(1)) / 2,
    })


def test_excluded_items_never_fill_a_short_ranking():
    # Asking for more items than a user has left pads with -1, never with
    # an excluded item.
    evaluator = RankingEvaluator(_data())
    top = evaluator.top_k(scores, torch.arange(3), 6, ['train', 'val'])
    assert top.tolist() == [[3, 4, 5, 2, -1, -1], [5, 0, 4, 3, -1, -1],
                            [5, 2, 1, -1, -1, -1]]
    model = _Fixed(3, 6)
    assert model.recommend(_data(), torch.tensor([1]), k=6).tolist() == [
        [5, 0, 4, 3, -1, -1]]


def test_excluded_item_is_never_ranked_even_at_large_k():
    # User 1's training items 1 and 2 are excluded from the ranking, so even
    # at K >= the number of items neither can be hit (topk used to return
    # excluded items at the tail of a short ranking). A held-out pair that
    # is also a training pair is refused outright (see below).
    evaluator = RankingEvaluator(_data(), ks=(6, ))
    top = evaluator.top_k(scores, [1], 6, ['train'])
    assert top.tolist() == [[5, 0, 4, 3, -1, -1]]


def test_recommend_more_items_than_exist_pads_with_minus_one():
    # k = 8 > 6 items: the ranking is every item left, then -1.
    model = _Fixed(3, 6)
    top = model.recommend(_data(), [1], k=8, exclude_seen=False)
    assert top.tolist() == [[1, 2, 5, 0, 4, 3, -1, -1]]
    top = model.recommend(_data(), torch.tensor([1]), k=8)
    assert top.tolist() == [[5, 0, 4, 3, -1, -1, -1, -1]]
    # No users, no rows (a plain [] read as float ids).
    none = model.recommend(_data(), [], k=3)
    assert none.shape == (0, 3) and none.dtype == torch.long


@pytest.mark.parametrize('users,message', [
    ([-1], 'user id -1 is out of range: the data set has users 0..2'),
    ([0, 3], 'user id 3 is out of range: the data set has users 0..2'),
    (torch.tensor([0.0]), 'user ids must be integers, got dtype '
     'torch.float32'),
])
def test_bad_user_ids_are_refused(users, message):
    # A negative id used to index from the end: silently another user's
    # scores against this one's held-out items.
    evaluator = RankingEvaluator(_data())
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluator.evaluate(scores, 'val', users=users)
    with pytest.raises(ValueError, match=re.escape(message)):
        _Fixed(3, 6).recommend(_data(), users, evaluator=evaluator)
    with pytest.raises(ValueError, match='k must be positive, got 0'):
        evaluator.top_k(scores, [0], 0, [])


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_scores_are_refused(bad):
    # NaN ranked first (recall 1.0) and -inf read as "excluded".
    from pyg_mmrec.errors import DivergenceError
    evaluator = RankingEvaluator(_data())

    def broken(users):
        out = scores(users).clone()
        out[:, 1] = bad
        return out

    with pytest.raises(DivergenceError, match='the model scores items as '
                       'NaN or infinite: it diverged'):
        evaluator.evaluate(broken, 'val')


@pytest.mark.parametrize('split,key,value,message', [
    ('val', 'val_edge_index', [[0, 1], [5, 6]],
     'the val edges hold item id 6, outside the data set\'s items 0..5'),
    ('test', 'test_edge_index', [[3], [0]],
     'the test edges hold user id 3, outside the data set\'s users 0..2'),
    ('train', 'edge_index', [[-1], [0]],
     'the train edges hold user id -1, outside the data set\'s users 0..2'),
    ('val', 'val_edge_index', [[0.0], [1.0]],
     'the val edges must be a [2, E] integer tensor, got torch.float32'),
])
def test_edges_outside_the_data_are_refused(split, key, value, message):
    # PyG's subgraph() renumbers edge_index but not the held-out edges
    # stored beside it: an item subgraph used to be scored (recall 0.45)
    # against ids of items that were no longer there.
    data = _data()
    data['user', 'interacts', 'item'][key] = torch.tensor(value)
    with pytest.raises(ValueError, match=re.escape(message)):
        RankingEvaluator(data)


def test_item_subgraph_with_stale_held_out_ids_is_refused():
    data = _data().subgraph({'item': torch.tensor([0, 1, 2])})
    with pytest.raises(ValueError, match='outside the data set'):
        RankingEvaluator(data)


@pytest.mark.parametrize('split,pairs,message', [
    # The only held-out item ranked first scored recall 0.5.
    ('val', [[2, 2], [5, 5]], 'the val edges repeat 1 user-item pair '
     '(first: user 2, item 5): Recall@K would count them twice'),
    ('val', [[0], [TRAIN[0][1]]], 'the val edges hold 1 user-item pair '
     f'(first: user 0, item {TRAIN[0][1]}) of the train split: those items '
     'are excluded from the val ranking, so they could never be hit'),
    ('test', [[VAL[0][0]], [VAL[0][1]]], 'the test edges hold 1 user-item '
     f'pair (first: user {VAL[0][0]}, item {VAL[0][1]}) of the train or '
     'val split'),
])
def test_held_out_pairs_that_distort_the_metrics_are_refused(split, pairs,
                                                             message):
    data = _data()
    data['user', 'interacts', 'item'][f'{split}_edge_index'] = \
        torch.tensor(pairs)
    evaluator = RankingEvaluator(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluator.evaluate(scores, split)
    # Only where the split is used: recommending (which ranks no held-out
    # split) and evaluating the other split still work.
    assert _Fixed(3, 6).recommend(data, [0], k=2).shape == (1, 2)
    other = 'test' if split == 'val' else 'val'
    assert evaluator.evaluate(scores, other)['recall@20'] >= 0
