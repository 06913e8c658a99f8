r"""BPR triple sampling."""
import numpy as np
import pytest
import torch

from pyg_mmrec.data.sampling import BPRSampler, check_negatives


def _dense_graph(num_users=30, num_items=12, seed=0):
    r"""Every user has interacted with all but 1-3 items."""
    gen = torch.Generator().manual_seed(seed)
    positive = torch.ones(num_users, num_items, dtype=torch.bool)
    for user in range(num_users):
        free = torch.randperm(num_items, generator=gen)[:1 + user % 3]
        positive[user, free] = False
    return positive.nonzero().t().contiguous(), positive


def _triples(sampler, epoch):
    batches = list(sampler.epoch(epoch))
    return tuple(torch.cat(part) for part in zip(*batches)), batches


def test_negatives_never_positive_on_dense_graph():
    edge_index, positive = _dense_graph()
    sampler = BPRSampler(edge_index, 30, 12, batch_size=64, seed=0)
    seen_negatives = set()
    for epoch in range(20):
        (users, pos, neg), _ = _triples(sampler, epoch)
        assert bool(positive[users, pos].all())
        assert not bool(positive[users, neg].any())
        assert bool(((neg >= 0) & (neg < 12)).all())
        seen_negatives |= set(zip(users.tolist(), neg.tolist()))
    # Uniform over the non-positives: every allowed pair eventually drawn.
    assert seen_negatives == set(map(tuple, (~positive).nonzero().tolist()))


def test_negatives_are_uniform_over_the_free_items():
    # One user with 3 free items of 12 (9 positives): each free item a
    # third of the time, whatever its position among the positives.
    positive = torch.zeros(2, 12, dtype=torch.bool)
    positive[0, [0, 1, 2, 3, 5, 6, 7, 8, 9]] = True  # free: 4, 10, 11
    positive[1, 0] = True
    sampler = BPRSampler(positive.nonzero().t(), 2, 12)
    users = torch.zeros(30_000, dtype=torch.long)
    neg = sampler.sample_negatives(users, torch.Generator().manual_seed(0))
    counts = torch.bincount(neg, minlength=12).float() / users.numel()
    expected = torch.zeros(12)
    expected[[4, 10, 11]] = 1 / 3
    # Three standard errors of a frequency of 1/3 in 30,000 draws: 0.008.
    torch.testing.assert_close(counts, expected, atol=0.01, rtol=0)


def test_sample_negatives_directly():
    edge_index, positive = _dense_graph(num_users=5, num_items=6, seed=3)
    sampler = BPRSampler(edge_index, 5, 6)
    users = torch.arange(5).repeat_interleave(200)
    neg = sampler.sample_negatives(users, torch.Generator().manual_seed(0))
    assert not bool(positive[users, neg].any())
    assert torch.equal(sampler.is_positive(users, neg),
                       torch.zeros_like(users, dtype=torch.bool))
    all_pairs = torch.cartesian_prod(torch.arange(5), torch.arange(6)).t()
    assert torch.equal(sampler.is_positive(all_pairs[0], all_pairs[1]),
                       positive.view(-1))


def test_each_edge_once_per_epoch():
    edge_index, _ = _dense_graph()
    sampler = BPRSampler(edge_index, 30, 12, batch_size=50, seed=4)
    (users, pos, _), batches = _triples(sampler, 0)
    assert len(batches) == len(sampler) == -(-edge_index.size(1) // 50)
    assert all(b[0].numel() == 50 for b in batches[:-1])
    got = sorted(zip(users.tolist(), pos.tolist()))
    assert got == sorted(map(tuple, edge_index.t().tolist()))
    # Shuffled, not in input order.
    assert not torch.equal(users, edge_index[0])


def test_reproducible_and_different_across_epochs():
    edge_index, _ = _dense_graph()
    a = BPRSampler(edge_index, 30, 12, batch_size=32, seed=7)
    b = BPRSampler(edge_index, 30, 12, batch_size=32, seed=7)
    ta, _ = _triples(a, 3)
    tb, _ = _triples(b, 3)
    for x, y in zip(ta, tb):
        assert torch.equal(x, y)
    # Independent of the global RNG.
    torch.manual_seed(123)
    tc, _ = _triples(a, 3)
    assert all(torch.equal(x, y) for x, y in zip(ta, tc))
    # Another epoch, or another seed, gives other triples.
    t4, _ = _triples(a, 4)
    assert not torch.equal(ta[0], t4[0])
    other, _ = _triples(BPRSampler(edge_index, 30, 12, 32, seed=8), 3)
    assert not torch.equal(ta[0], other[0])


@pytest.mark.parametrize('world_size', [2, 3])
def test_rank_shares_are_disjoint_and_cover_the_epoch(world_size):
    edge_index, _ = _dense_graph()
    num_edges = edge_index.size(1)
    full, _ = _triples(BPRSampler(edge_index, 30, 12, 16, seed=2), 5)
    positions = []
    triples = set()
    for rank in range(world_size):
        sampler = BPRSampler(edge_index, 30, 12, 16, seed=2, rank=rank,
                             world_size=world_size)
        (users, pos, neg), batches = _triples(sampler, 5)
        assert len(batches) == len(sampler)
        assert abs(users.numel() - num_edges / world_size) < 1
        keys = (users * 12 + pos).tolist()
        positions += keys
        triples |= set(zip(users.tolist(), pos.tolist(), neg.tolist()))
    # Disjoint shares that together hold every edge exactly once ...
    assert sorted(positions) == sorted((edge_index[0] * 12 +
                                        edge_index[1]).tolist())
    # ... with the same triples as the single-process epoch.
    assert triples == set(zip(*(t.tolist() for t in full)))


def test_user_with_every_item_is_an_error():
    edge_index, positive = _dense_graph(num_users=4, num_items=5)
    full = torch.stack([torch.full((5, ), 2), torch.arange(5)])
    edge_index = torch.cat([edge_index, full], dim=1)
    with pytest.raises(ValueError, match='user 2 has interacted with every '
                       'item'):
        BPRSampler(edge_index, 4, 5)


def test_duplicate_pairs_do_not_fill_a_user():
    # User 0 has items 0 and 1 of 3, item 0 given twice: counted as given,
    # that read as "interacted with every item".
    edge_index = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 2]])
    sampler = BPRSampler(edge_index, 2, 3, seed=0)
    for users, pos, neg in sampler.epoch(0):
        assert bool((neg[users == 0] == 2).all())


def test_check_negatives_names_the_first_full_user_and_counts_others():
    # Users 1 and 3 have all three items, user 0 two of them.
    users = np.array([0, 0, 3, 3, 3, 1, 1, 1])
    with pytest.raises(LookupError) as err:
        check_negatives(users, 3, lambda user, others: LookupError(
            user, others))
    assert err.value.args == (1, 1)
    check_negatives(users[:2], 3, lambda user, others: AssertionError())
    check_negatives(np.array([], dtype=np.int64), 3,
                    lambda user, others: AssertionError())


@pytest.mark.parametrize('kwargs,match', [
    (dict(edge_index=torch.empty(2, 0, dtype=torch.long)),
     'at least one training edge'),
    (dict(batch_size=0), 'batch_size must be positive'),
    (dict(edge_index=torch.tensor([0, 1])),
     r"'edge_index' must have shape \[2, E\] \(got \[2\]\)"),
    # Float ids were truncated silently.
    (dict(edge_index=torch.tensor([[0., 1.], [1., 0.]])),
     "'edge_index' must be an integer tensor"),
    # Out-of-range ids: keys user * num_items + item would collide.
    (dict(edge_index=torch.tensor([[0, 1], [1, 7]])),
     "'edge_index' has item id 7 but there are only 3 items"),
    (dict(edge_index=torch.tensor([[0, 1], [1, 3]])),
     "'edge_index' has item id 3 but there are only 3 items"),
    (dict(edge_index=torch.tensor([[0, 2], [1, 0]])),
     "'edge_index' has user id 2 but there are only 2 users"),
    (dict(edge_index=torch.tensor([[0, 1], [-1, 0]])),
     "'edge_index' has negative item id -1"),
    (dict(edge_index=torch.tensor([[-2, 1], [1, 0]])),
     "'edge_index' has negative user id -2"),
    # A rank outside [0, world_size) would overlap another rank's share.
    (dict(rank=2, world_size=2),
     r'rank must be in \[0, world_size\) = \[0, 2\), got 2'),
    (dict(rank=-1, world_size=2), r'rank must be .*, got -1'),
    (dict(world_size=0), 'world_size must be >= 1, got 0'),
])
def test_bad_arguments(kwargs, match):
    args = dict(edge_index=torch.tensor([[0, 1], [1, 0]]), num_users=2,
                num_items=3, batch_size=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BPRSampler(**args)
