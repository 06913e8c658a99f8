r"""Bipartite normalisation of the user-item graph as transforms.

Both transforms are pure functions of their input (they work on the shallow
copy made by :class:`~torch_geometric.transforms.BaseTransform`) and compose
with :class:`torch_geometric.transforms.Compose`. They compute edge weights
once, so that the layers in :mod:`pyg_mmrec.nn.conv` only propagate.
"""
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

from pyg_mmrec.data.hetero import INTERACTS, ITEM, USER, num_users_items
from pyg_mmrec.graph import one_sided_norm, sym_norm_bipartite

EdgeType = Tuple[str, str, str]


def _user_item_type(edge_type: EdgeType, name: str = 'edge_type',
                    src: str = USER, dst: str = ITEM) -> EdgeType:
    # The graph functions read the first row as users and the second as
    # items: an item-to-user type would be read the wrong way round.
    edge_type = tuple(edge_type)
    if len(edge_type) != 3 or (edge_type[0], edge_type[2]) != (src, dst):
        raise ValueError(f"{name} must be a ('{src}', relation, '{dst}') "
                         f"edge type (got {edge_type})")
    return edge_type


def _check_edge_type(data: HeteroData, edge_type: EdgeType) -> None:
    if edge_type not in data.edge_types or 'edge_index' not in data[edge_type]:
        raise ValueError(f"data has no 'edge_index' for edge type "
                         f"{edge_type} (edge types: {data.edge_types})")


@contextmanager
def _named(edge_type: EdgeType) -> Iterator[None]:
    # Input errors of the graph functions, prefixed with the edge type.
    try:
        yield
    except ValueError as e:
        raise ValueError(f'edge type {edge_type}: {e}') from None


def _dtype_repr(dtype: torch.dtype) -> str:
    # Only a dtype other than the default is shown: PyG compares the repr
    # of a data set's pre_transform with its cache's.
    return '' if dtype == torch.float32 else f', dtype={dtype}'


class SymmetricNorm(BaseTransform):
    r"""Stores DiffMM's symmetric normalised adjacency with self-loops,

    .. math::
        \mathbf{A} = \mathbf{D}^{-1/2} \bar{\mathbf{A}} \mathbf{D}^{-1/2},
        \qquad \bar{\mathbf{A}} = \begin{bmatrix} \mathbf{0} & \mathbf{R} \\
        \mathbf{R}^\top & \mathbf{0} \end{bmatrix} + \mathbf{I},

    computed by :func:`~pyg_mmrec.graph.sym_norm_bipartite` from the
    user-item edges of :obj:`edge_type`.

    :math:`\mathbf{A}` lives on the *homogeneous* graph of ``U + I`` nodes
    (users ``0..U-1``, items ``U..U+I-1``), which has no node type of its
    own in a :class:`HeteroData`, so it is stored next to the edges it was
    computed from, on the store of :obj:`edge_type` (the same convention as
    :class:`~pyg_mmrec.transforms.diffusion_graph.DiffusionGraph`):

    * :obj:`adj_edge_index` ``[2, 2E + U + I]``: user-to-item edges, then
      item-to-user edges, then the self-loops (homogeneous ids);
    * :obj:`adj_edge_weight` ``[2E + U + I]``: their weights (the matrix is
      symmetric, so pass :obj:`symmetric=True` to
      :func:`pyg_mmrec.nn.sparse.to_adj`).

    :obj:`edge_weight` of the store is left alone, so this transform
    composes with :class:`OneSidedNorm`.

    .. note::
        Do not batch such graphs with
        :meth:`~torch_geometric.data.Batch.from_data_list`: PyG shifts
        every ``*index`` attribute of a ``(user, *, item)`` store by the
        user and item counts, which is wrong for homogeneous ids.
        (Recommendation data sets are one graph, so nothing here batches
        them.)

    Args:
        edge_type (tuple): The ``(user, relation, item)`` edge type to
            normalise (default: the training interactions).
        weight_attr (str, optional): Attribute of that store holding the
            weights of :math:`\mathbf{R}` (default: :obj:`None`, binary).
        add_self_loops (bool): Add :math:`\mathbf{I}` before normalising
            (default: :obj:`True`).
        dtype (torch.dtype): The dtype the weights are computed in
            (default: :obj:`torch.float32`; e.g. :obj:`torch.float64` for a
            model made ``.double()``).
    """
    def __init__(self, edge_type: EdgeType = INTERACTS,
                 weight_attr: Optional[str] = None,
                 add_self_loops: bool = True,
                 dtype: torch.dtype = torch.float32) -> None:
        self.edge_type = _user_item_type(edge_type)
        self.weight_attr = weight_attr
        self.add_self_loops = add_self_loops
        self.dtype = dtype

    def forward(self, data: HeteroData) -> HeteroData:
        _check_edge_type(data, self.edge_type)
        num_users, num_items = num_users_items(data)
        store = data[self.edge_type]
        weight = None
        if self.weight_attr is not None:
            if self.weight_attr not in store:
                raise ValueError(f"edge type {self.edge_type} has no "
                                 f"attribute '{self.weight_attr}'")
            weight = store[self.weight_attr]
            if weight.shape != (store.edge_index.size(1), ):
                raise ValueError(f"edge type {self.edge_type}: "
                                 f"'{self.weight_attr}' has shape "
                                 f"{list(weight.shape)} but there are "
                                 f"{store.edge_index.size(1)} edges")
        with _named(self.edge_type):
            index, weight = sym_norm_bipartite(store.edge_index, num_users,
                                               num_items, weight,
                                               self.add_self_loops,
                                               self.dtype)
        store.adj_edge_index = index
        store.adj_edge_weight = weight
        return data

    def __repr__(self) -> str:
        # Every option that changes the output: PyG warns when a data set's
        # cache was made with a pre_transform of another repr.
        return (f'{self.__class__.__name__}(edge_type={self.edge_type}, '
                f'weight_attr={self.weight_attr!r}, '
                f'add_self_loops={self.add_self_loops}'
                f'{_dtype_repr(self.dtype)})')


class OneSidedNorm(BaseTransform):
    r"""Writes MMSSL's one-sided normalised weights
    :math:`\mathbf{P} = \mathbf{D}_u^{-1/2} \mathbf{R}` and
    :math:`\mathbf{Q} = \mathbf{D}_i^{-1/2} \mathbf{R}^\top` (from
    :func:`~pyg_mmrec.graph.one_sided_norm`) as :obj:`edge_weight` of the
    two directions, in PyG's ``source -> target`` reading:

    * ``(user, rel, item)`` (:obj:`edge_type`): items aggregate users, so
      :obj:`edge_weight[e]` :math:`= \mathbf{Q}_{i u} = d_i^{-1/2}`;
    * ``(item, rev_rel, user)`` (:obj:`rev_edge_type`, created or
      overwritten): :obj:`edge_index` is the flipped user-item index (same
      edge order) and :obj:`edge_weight[e]`
      :math:`= \mathbf{P}_{u i} = d_u^{-1/2}`; users aggregate items.

    Degrees count edges (:math:`\mathbf{R}` is binary), as in the paper.
    :class:`~pyg_mmrec.transforms.AdversarialGraph` applies this transform
    to the graphs it generates, so they have the same layout.

    .. warning::
        Apply :class:`~torch_geometric.transforms.ToUndirected` *before*
        this transform, never after it. :class:`ToUndirected` gives the
        reverse edge type a copy of every edge-level attribute of the
        forward one, and so replaces :math:`\mathbf{P}` on
        :obj:`rev_edge_type` by :math:`\mathbf{Q}` (silently: both are
        ``[E]`` tensors of the same edge order). No choice of attributes
        avoids this while :obj:`edge_weight` means each direction's own
        normalisation, since the two directions' weights differ. Run
        first, :class:`ToUndirected` writes the reverse :obj:`edge_index`
        this transform writes (the flipped index, same edge order), so the
        edge-level attributes it copied stay aligned with
        :obj:`edge_weight`.

    Args:
        edge_type (tuple): The ``(user, relation, item)`` edge type
            (default: the training interactions).
        rev_edge_type (tuple, optional): The reverse edge type (default:
            ``(item, 'rev_' + relation, user)``, the name PyG's
            :class:`~torch_geometric.transforms.ToUndirected` uses).
        dtype (torch.dtype): The dtype the weights are computed in
            (default: :obj:`torch.float32`).
    """
    def __init__(self, edge_type: EdgeType = INTERACTS,
                 rev_edge_type: Optional[EdgeType] = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.edge_type = _user_item_type(edge_type)
        self.dtype = dtype
        src, rel, dst = self.edge_type
        # Checked, since the reverse edges are written over whatever the
        # type held (given the training type itself, its edge_index).
        self.rev_edge_type = (_user_item_type(rev_edge_type,
                                              'rev_edge_type', ITEM, USER)
                              if rev_edge_type is not None
                              else (dst, f'rev_{rel}', src))

    def forward(self, data: HeteroData) -> HeteroData:
        _check_edge_type(data, self.edge_type)
        num_users, num_items = num_users_items(data)
        store = data[self.edge_type]
        with _named(self.edge_type):
            user_weight, item_weight = one_sided_norm(
                store.edge_index, num_users, num_items, self.dtype)
        store.edge_weight = item_weight
        rev = data[self.rev_edge_type]
        rev.edge_index = store.edge_index.flip(0)
        rev.edge_weight = user_weight
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(edge_type={self.edge_type}, '
                f'rev_edge_type={self.rev_edge_type}'
                f'{_dtype_repr(self.dtype)})')
