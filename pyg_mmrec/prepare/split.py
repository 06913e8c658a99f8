r"""Seeded train/validation/test splits of an interaction list.

Three kinds, all per user so that no user is lost (every user with at least
one interaction keeps at least one training interaction):

* ``'random'``: each user's interactions are shuffled and cut by the
  ratios (e.g. 8:1:1). Per user, the validation and test counts are the
  ratio times the user's count rounded half up, and training gets the rest,
  so every count is within one interaction of its exact ratio;
* ``'loo'`` (leave-one-out): one random interaction per user goes to test
  and another to validation; users with two interactions give only a test
  interaction, users with one give none;
* ``'temporal'``: like ``'random'`` but each user's interactions are taken
  in timestamp order (ties broken by the seed), so that every training
  interaction of a user is no later than their validation interactions,
  which are no later than their test interactions.

The reader of the library's layout needs every held-out item to be known
from training. For ``'random'`` and ``'loo'`` the split repairs itself: a
held-out interaction whose item has no training interaction is swapped with
one of the same user's training interactions whose item has at least two,
which keeps every per-user count (and so the ratios) unchanged. What is left
(and anything of a ``'temporal'`` split, where a swap would break the time
order) is handled by :func:`resolve_cold_items`.
"""
import math
import numbers
from fractions import Fraction
from typing import Optional, Sequence, Tuple

import numpy as np

from pyg_mmrec.errors import ConfigError

SPLIT_METHODS = ('random', 'loo', 'temporal')
COLD_ITEM_POLICIES = ('drop', 'train')
TRAIN, VAL, TEST = 0, 1, 2
SPLIT_NAMES = ('train', 'val', 'test')


def check_ratio_types(ratios: Sequence[float],
                      option: str = '--ratios') -> None:
    r"""Checks that :obj:`ratios` are three numbers (their values are
    checked by :func:`parse_ratios`)."""
    if not isinstance(ratios, (list, tuple, np.ndarray)) or \
            len(ratios) != 3:
        raise ConfigError(f'{option} needs three values train:val:test, '
                          f'got {ratios!r}')
    if not all(isinstance(r, numbers.Real) and not isinstance(r, bool)
               for r in ratios):
        raise ConfigError(f'{option} must be numbers, got {list(ratios)}')


def parse_ratios(ratios: Sequence[float], option: str = '--ratios'
                 ) -> Tuple[Fraction, Fraction, Fraction]:
    r"""Normalises three positive ratios (train, validation, test) to exact
    fractions summing to one. Exact arithmetic keeps the rounding of
    per-user counts stable: ``0.1 * 5`` is ``0.5`` here, not
    ``0.49999...``. Errors name :obj:`option`."""
    check_ratio_types(ratios, option)
    finite = all(math.isfinite(r) for r in ratios)
    parts = [Fraction(repr(float(r))) if finite else 0 for r in ratios]
    if not finite or any(p < 0 for p in parts) or parts[0] == 0:
        raise ConfigError(f'{option} must be finite and non-negative with a '
                          f'positive training share, got {list(ratios)}')
    if parts[1] == 0 or parts[2] == 0:
        raise ConfigError(f'{option} needs positive validation and test '
                          'shares: the data set layout requires non-empty '
                          f'val and test splits (got {list(ratios)})')
    total = sum(parts)
    return tuple(p / total for p in parts)  # type: ignore[return-value]


def _round_half_up(n: np.ndarray, share: Fraction) -> np.ndarray:
    # floor(n * a / b + 1/2) in integers: exact for any n.
    a, b = share.numerator, share.denominator
    return (2 * n.astype(object) * a + b) // (2 * b)


def split_sizes(counts: np.ndarray, method: str,
                ratios: Sequence[float] = (0.8, 0.1, 0.1)
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Per-user ``(train, val, test)`` sizes for users with :obj:`counts`
    interactions; every user keeps at least one training interaction."""
    counts = np.asarray(counts, dtype=np.int64)
    if method == 'loo':
        n_test = (counts >= 2).astype(np.int64)
        n_val = (counts >= 3).astype(np.int64)
    else:
        _, val_share, test_share = parse_ratios(ratios)
        n_val = _round_half_up(counts, val_share).astype(np.int64)
        n_test = _round_half_up(counts, test_share).astype(np.int64)
        # Training must keep at least one interaction: take it back from
        # test first, then validation (both only ever shrink here).
        short = np.maximum(1 - (counts - n_val - n_test), 0)
        from_test = np.minimum(short, n_test)
        n_test = n_test - from_test
        n_val = n_val - (short - from_test)
    return counts - n_val - n_test, n_val, n_test


def split_interactions(users: np.ndarray, items: np.ndarray, method: str,
                       ratios: Sequence[float] = (0.8, 0.1, 0.1),
                       seed: int = 0,
                       timestamps: Optional[np.ndarray] = None) -> np.ndarray:
    r"""Assigns every interaction to a split.

    Args:
        users (np.ndarray): User id of each interaction.
        items (np.ndarray): Item id of each interaction; the (user, item)
            pairs should be distinct.
        method (str): ``'random'``, ``'loo'`` or ``'temporal'``.
        ratios (sequence of float): ``train:val:test`` shares
            (``'random'``, ``'temporal'``); normalised to sum to one.
        seed (int): Seed of the shuffle (``'random'``, ``'loo'``) or of the
            tie-breaking between equal timestamps (``'temporal'``).
        timestamps (np.ndarray, optional): Needed for ``'temporal'``.

    Returns:
        An ``int8`` array with :obj:`TRAIN` (0), :obj:`VAL` (1) or
        :obj:`TEST` (2) per interaction.
    """
    if method not in SPLIT_METHODS:
        raise ConfigError(f"--split must be one of "
                          f"{', '.join(SPLIT_METHODS)}, got '{method}'")
    if method == 'temporal' and timestamps is None:
        raise ConfigError("the temporal split needs a timestamp column "
                          "(--timestamp-col)")
    if method != 'loo':
        parse_ratios(ratios)  # validate early, even for empty input
    users = np.asarray(users)
    items = np.asarray(items)
    num = users.shape[0]
    codes = np.zeros(num, dtype=np.int8)
    if num == 0:
        return codes
    _, user_idx = np.unique(users, return_inverse=True)
    rng = np.random.default_rng(seed)
    noise = rng.permutation(num)  # distinct random keys: a total order
    if method == 'temporal':
        order = np.lexsort((noise, np.asarray(timestamps), user_idx))
    else:
        order = np.lexsort((noise, user_idx))
    sorted_users = user_idx[order]
    counts = np.bincount(user_idx)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(num) - starts[sorted_users]
    n_train, n_val, _ = split_sizes(counts, method, ratios)
    limit_train = n_train[sorted_users]
    limit_val = limit_train + n_val[sorted_users]
    sorted_codes = np.where(rank < limit_train, TRAIN,
                            np.where(rank < limit_val, VAL, TEST))
    codes[order] = sorted_codes
    if method != 'temporal':
        codes = _swap_cold_items(user_idx, items, codes)
    return codes


def _swap_cold_items(user_idx: np.ndarray, items: np.ndarray,
                     codes: np.ndarray) -> np.ndarray:
    r"""Swaps held-out interactions of items without training interactions
    with training interactions of the same user (see the module doc)."""
    _, item_idx = np.unique(items, return_inverse=True)
    train_count = np.bincount(item_idx[codes == TRAIN],
                              minlength=int(item_idx.max()) + 1)
    cold = np.flatnonzero((codes != TRAIN) & (train_count[item_idx] == 0))
    if cold.size == 0:
        return codes
    codes = codes.copy()
    by_user = np.argsort(user_idx, kind='stable')
    bounds = np.concatenate([[0], np.cumsum(np.bincount(user_idx))])
    for idx in cold:
        if train_count[item_idx[idx]] > 0:  # repaired by an earlier swap
            continue
        u = user_idx[idx]
        row = by_user[bounds[u]:bounds[u + 1]]
        cand = row[(codes[row] == TRAIN) & (train_count[item_idx[row]] >= 2)]
        if cand.size == 0:
            continue
        # The most popular candidate loses least by giving up one training
        # interaction; argmax takes the first on ties (deterministic).
        j = cand[np.argmax(train_count[item_idx[cand]])]
        codes[j], codes[idx] = codes[idx], TRAIN
        train_count[item_idx[idx]] += 1
        train_count[item_idx[j]] -= 1
    return codes


def resolve_cold_items(items: np.ndarray, codes: np.ndarray,
                       policy: str = 'drop') -> Tuple[np.ndarray, np.ndarray,
                                                      int]:
    r"""Handles held-out interactions whose item has no training
    interaction.

    Args:
        items (np.ndarray): Item id of each interaction.
        codes (np.ndarray): Split code of each interaction.
        policy (str): ``'drop'`` removes those interactions (and so the
            items, which have no interaction left); ``'train'`` moves them
            into training (which breaks the time order of a temporal
            split for them).

    Returns:
        ``(keep, codes, count)``: the mask of interactions to keep, the new
        codes (of all interactions) and how many were dropped or moved.
    """
    if policy not in COLD_ITEM_POLICIES:
        raise ConfigError(f"--cold-items must be one of "
                          f"{', '.join(COLD_ITEM_POLICIES)}, got '{policy}'")
    codes = np.asarray(codes).copy()
    keep = np.ones(codes.shape[0], dtype=bool)
    if codes.size == 0:
        return keep, codes, 0
    _, item_idx = np.unique(items, return_inverse=True)
    train_count = np.bincount(item_idx[codes == TRAIN],
                              minlength=int(item_idx.max()) + 1)
    cold = (codes != TRAIN) & (train_count[item_idx] == 0)
    if policy == 'drop':
        keep &= ~cold
    else:
        codes[cold] = TRAIN
    return keep, codes, int(cold.sum())
