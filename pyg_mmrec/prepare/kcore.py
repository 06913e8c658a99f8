r"""Iterative k-core filtering of a bipartite interaction graph."""
from typing import Tuple

import numpy as np


def kcore_mask(users: np.ndarray, items: np.ndarray, user_k: int,
               item_k: int) -> np.ndarray:
    r"""Boolean mask of the interactions in the (:obj:`user_k`,
    :obj:`item_k`)-core of the bipartite graph.

    The core is the largest sub-graph in which every user has at least
    :obj:`user_k` interactions and every item at least :obj:`item_k`. It is
    unique, so it can be found by repeatedly removing every node below its
    threshold (removing a node can push its neighbours below theirs, hence
    the loop) until nothing changes.

    Args:
        users (np.ndarray): User ids (any integers, e.g. from
            :func:`numpy.unique` ``return_inverse``), one per interaction.
        items (np.ndarray): Item ids, one per interaction.
        user_k (int): Minimum interactions per user (``<= 1`` keeps all).
        item_k (int): Minimum interactions per item (``<= 1`` keeps all).

    The ids should be distinct (user, item) pairs: degrees count rows.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    keep = np.ones(users.shape[0], dtype=bool)
    if users.size == 0:
        return keep
    # Compact ids so that bincount arrays stay small whatever the raw ids.
    _, u = np.unique(users, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)
    num_u, num_i = int(u.max()) + 1, int(i.max()) + 1
    while True:
        user_deg = np.bincount(u[keep], minlength=num_u)
        item_deg = np.bincount(i[keep], minlength=num_i)
        new_keep = keep & (user_deg[u] >= user_k) & (item_deg[i] >= item_k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def kcore_filter(users: np.ndarray, items: np.ndarray, user_k: int,
                 item_k: int) -> Tuple[np.ndarray, np.ndarray]:
    r"""The (user, item) pairs of the k-core (see :func:`kcore_mask`)."""
    keep = kcore_mask(users, items, user_k, item_k)
    return np.asarray(users)[keep], np.asarray(items)[keep]
