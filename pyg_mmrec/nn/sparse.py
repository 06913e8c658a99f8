r"""Sparse adjacency construction, backend selection and the fused SpMM
kernel used by the propagation layers in :mod:`pyg_mmrec.nn.conv`.

Every layer follows PyG's convention: messages flow from
:obj:`edge_index[0]` (source) to :obj:`edge_index[1]` (target), and a sparse
adjacency handed to a layer is the *transposed* matrix :math:`\mathbf{A}^\top`
whose row :math:`i` holds the in-edges of target :math:`i`, so that one
propagation step is :math:`\mathbf{A}^\top \mathbf{X}`.

:func:`to_adj` builds that adjacency for a chosen backend:

* ``'scatter'``: the plain :obj:`edge_index` and :obj:`edge_weight`
  (gather + scatter path of :class:`~torch_geometric.nn.conv.MessagePassing`),
* ``'coo'`` / ``'csr'``: a :class:`torch.sparse` tensor (weights inside),
* ``'sparse_tensor'``: a :class:`torch_sparse.SparseTensor` (needs
  :obj:`torch-sparse`),
* ``'edge_index'``: a column-sorted :class:`torch_geometric.EdgeIndex` plus
  its permuted weights,
* ``'sparse_adj'``: a :class:`SparseAdj` (cached CSR with the custom
  autograd kernel :class:`SparseAdjMM`),
* ``'auto'``: the library default, currently ``'sparse_adj'``.

Why :class:`SparseAdj` is the default: the propagation matrices of both models
are constants during training, so everything that the stock paths redo on
every call (normalisation, COO to CSR conversion, building the transposed
matrix for the backward pass) can be done once. When the caller states that
the matrix is symmetric (true for DiffMM's
:math:`\mathbf{D}^{-1/2}\bar{\mathbf{A}}\mathbf{D}^{-1/2}`) the backward pass
multiplies by the very same CSR matrix; otherwise the transposed CSR is built
once and cached. The kernel itself is PyTorch's native CSR SpMM, so nothing
here needs :obj:`torch-scatter` or :obj:`torch-sparse`.
"""
import operator
import warnings
import weakref
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

import torch_geometric.typing
from torch_geometric import EdgeIndex
from torch_geometric.index import index2ptr, ptr2index
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import (
    coalesce,
    is_torch_sparse_tensor,
    scatter,
    spmm,
)

from pyg_mmrec.errors import describe
from pyg_mmrec.graph import (
    check_edge_index,
    sym_norm_bipartite,
)

#: Backend names accepted by :func:`to_adj`.
BACKENDS: Tuple[str, ...] = ('auto', 'sparse_adj', 'scatter', 'coo', 'csr',
                             'sparse_tensor', 'edge_index')

#: The backend that ``'auto'`` resolves to.
DEFAULT_BACKEND = 'sparse_adj'

SizeLike = Union[int, Tuple[int, int], None]


def csr_tensor(rowptr: Tensor, col: Tensor, value: Tensor,
               size: Tuple[int, int], check_invariants: bool = False
               ) -> Tensor:
    r"""A :obj:`torch.sparse_csr` tensor of the arrays, without torch's
    "beta" notice, which would be noise in every user's first forward pass.
    The ``O(nnz)`` invariant checks are skipped unless
    :obj:`check_invariants`: the library's own arrays are valid CSR."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Sparse CSR tensor support')
        return torch.sparse_csr_tensor(rowptr, col, value, size,
                                       check_invariants=check_invariants)


def _check_csr(rowptr: Tensor, col: Tensor, value: Tensor,
               size: Tuple[int, int]) -> None:
    r"""Raises :class:`ValueError` unless the arrays are a valid CSR matrix
    of :obj:`size`: sorted, distinct column ids within each row, all in
    range (``O(nnz)``)."""
    num_rows, num_cols = int(size[0]), int(size[1])
    if num_rows < 0 or num_cols < 0:
        raise ValueError(f"'size' must not be negative (got {tuple(size)})")
    for name, index in (('rowptr', rowptr), ('col', col)):
        if index.dim() != 1 or index.dtype not in (torch.int32, torch.long):
            raise ValueError(f"'{name}' must be a 1-D int32 or int64 tensor "
                             f"(got {index.dim()}-D {index.dtype})")
    if value.dim() != 1 or not value.is_floating_point():
        raise ValueError(f"'value' must be a 1-D floating-point tensor (got "
                         f"{value.dim()}-D {value.dtype})")
    if not rowptr.device == col.device == value.device:
        raise ValueError(f"'rowptr', 'col' and 'value' must be on one device "
                         f"(got {rowptr.device}, {col.device}, "
                         f"{value.device})")
    if rowptr.numel() != num_rows + 1:
        raise ValueError(f"'rowptr' has {rowptr.numel()} entries but the "
                         f"matrix has {num_rows} rows")
    if col.numel() != value.numel():
        raise ValueError(f"'col' ({col.numel()}) and 'value' "
                         f"({value.numel()}) differ in length")
    try:
        # torch's own CSR invariants: rowptr from 0 to nnz, never
        # decreasing, columns in range, sorted and distinct in each row,
        # one index dtype. On the CPU: on CUDA they are device-side
        # asserts, which would break the process's CUDA context.
        # (Only the values' count is checked: a stand-in spares the copy.)
        csr_tensor(rowptr.cpu(), col.cpu(),
                   torch.zeros((), dtype=value.dtype).expand(col.numel()),
                   (num_rows, num_cols), check_invariants=True)
    except RuntimeError as e:
        raise ValueError(f'invalid CSR arrays: {describe(e)}') from None


def _csr_mm(csr: Tensor, x: Tensor) -> Tensor:
    r"""``csr @ x`` without autograd, on the fastest kernel for the device."""
    x = x.contiguous()
    if x.device.type == 'cpu':
        # The `reduce='sum'` entry point runs PyTorch's own vectorised CSR
        # kernel, which measured faster here than the MKL-backed `csr @ x`
        # (that one also sets up an MKL matrix handle on every call).
        return torch.sparse.mm(csr, x, 'sum')
    return torch.sparse.mm(csr, x)


class SparseAdj:
    r"""A sparse matrix :math:`\mathbf{M}` (``num_rows x
    num_cols``) in cached CSR form, multiplied by dense matrices through
    :class:`SparseAdjMM`.

    In the layers, :math:`\mathbf{M}` is the transposed adjacency
    :math:`\mathbf{A}^\top`: row :math:`i` lists the sources that send to
    target :math:`i`. Build it with :func:`to_adj` or
    :meth:`from_edge_index` rather than from raw CSR arrays: raw arrays are
    checked (``O(nnz)``), since the kernels skip torch's own checks.

    Args:
        rowptr (Tensor): CSR row pointer, ``[num_rows + 1]``.
        col (Tensor): Column of each non-zero, sorted within each row and
            without duplicates.
        value (Tensor): Value of each non-zero (may require gradients).
        size (int, int): ``(num_rows, num_cols)``.
        symmetric (bool): The caller's statement that :math:`\mathbf{M} =
            \mathbf{M}^\top` (values included). Then the backward pass reuses
            :math:`\mathbf{M}` instead of building its transpose.
            :meth:`from_edge_index` verifies it unless told not to.

    The CSR tensors derived from :obj:`value` are cached and follow it:
    reassigning :obj:`value` or editing it in place (as autograd counts
    edits: not through :obj:`.data`) invalidates them.
    The matrix behaves like a tensor in PyG's data objects: :meth:`to`,
    :meth:`clone`, :meth:`detach`, :meth:`share_memory_` and the like
    (called by :meth:`~torch_geometric.data.HeteroData.clone` and friends)
    apply to all of its tensors, and :func:`copy.deepcopy` and
    :mod:`pickle` work (the CSR caches are rebuilt on demand).

    PyG's :class:`~torch_geometric.explain.Explainer` sizes its edge masks
    from a tensor :obj:`edge_index`: to explain a model, pass the
    ``(edge_index, edge_weight)`` of :meth:`to_edge_index` in place of the
    matrix (edge :math:`k` of the mask is the :math:`k`-th stored
    non-zero).
    """
    def __init__(self, rowptr: Tensor, col: Tensor, value: Tensor,
                 size: Tuple[int, int], symmetric: bool = False) -> None:
        # The kernels skip torch's CSR invariant checks: arrays from outside
        # are checked here (O(nnz)), since a column id out of range reads
        # out of bounds. The library's own arrays come through `_trusted`.
        _check_csr(rowptr, col, value, size)
        self._init(rowptr, col, value, size, symmetric)

    @classmethod
    def _trusted(cls, rowptr: Tensor, col: Tensor, value: Tensor,
                 size: Tuple[int, int], symmetric: bool) -> 'SparseAdj':
        # Arrays built by this class (from checked ones): no O(nnz) checks.
        out = cls.__new__(cls)
        out._init(rowptr, col, value, size, symmetric)
        return out

    def _init(self, rowptr: Tensor, col: Tensor, value: Tensor,
              size: Tuple[int, int], symmetric: bool) -> None:
        if symmetric and size[0] != size[1]:
            raise ValueError(f"a symmetric matrix must be square (got size "
                             f"{tuple(size)})")
        self.rowptr = rowptr
        self.col = col
        self.value = value
        self.sparse_size = (int(size[0]), int(size[1]))
        self.symmetric = bool(symmetric)
        self._row: Optional[Tensor] = None
        # (rowptr, col, perm) of the transpose, built on first need:
        self._t: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        self._reset_value_caches()

    def _reset_value_caches(self) -> None:
        self._csr: Optional[Tensor] = None
        self._csr_t: Optional[Tensor] = None
        # The `value` tensor (and its version) the two are valid for:
        self._cache_key: Optional[Tuple[Tensor, int]] = None

    def _sync_value_caches(self) -> None:
        # O(1) on every call: `value` may have been reassigned, and torch
        # bumps a tensor's `_version` on every in-place edit (of it or of a
        # view of it), after which the copies in `_csr_t` would be stale.
        value = self.value
        _check_values(value, self.nnz())
        # Inference tensors have no version counter: only reassignment is
        # seen for them (they can be edited only inside inference mode).
        version = -1 if value.is_inference() else value._version
        key = self._cache_key
        if key is None or key[0] is not value or key[1] != version:
            self._csr = self._csr_t = None
            self._cache_key = (value, version)

    @classmethod
    def from_edge_index(
        cls,
        edge_index: Tensor,
        edge_weight: OptTensor = None,
        size: SizeLike = None,
        symmetric: bool = False,
        check_symmetric: bool = True,
        dtype: Optional[torch.dtype] = None,
    ) -> 'SparseAdj':
        r"""Builds :math:`\mathbf{A}^\top` of the graph whose messages flow
        from :obj:`edge_index[0]` to :obj:`edge_index[1]`.

        Duplicate edges are summed (as the scatter path does).

        Args:
            edge_index (Tensor): ``[2, E]`` edges (source, target).
            edge_weight (Tensor, optional): ``[E]`` weights (default: ones).
            size (int or (int, int), optional): ``num_nodes`` or
                ``(num_src, num_dst)``; inferred from :obj:`edge_index` if
                not given.
            symmetric (bool): State that the weighted adjacency is
                symmetric, which makes the backward pass transpose-free.
            check_symmetric (bool): Verify the statement once here
                (``O(E log E)``) and raise if it is false.
            dtype (torch.dtype, optional): dtype of the values (default:
                that of :obj:`edge_weight`, else float32).
        """
        num_src, num_dst = _resolve_size(edge_index, size)
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f'dtype must be a floating-point type (got '
                             f'{dtype})')
        if edge_weight is None:
            edge_weight = torch.ones(edge_index.size(1),
                                     device=edge_index.device,
                                     dtype=dtype or torch.float32)
        elif dtype is None:
            _check_float_weight(edge_weight)
        else:
            edge_weight = edge_weight.to(dtype)
        check_edge_index(edge_index, num_src, num_dst, edge_weight)

        # Rows of A^T are targets; coalescing sorts by (row, col). In int64:
        # `coalesce` sorts by the key `row * num_nodes + col`, which
        # overflows int32 beyond 46340 nodes.
        index = torch.stack([edge_index[1], edge_index[0]]).long()
        index, value = coalesce(index, edge_weight,
                                num_nodes=max(num_src, num_dst, 1),
                                reduce='sum')
        # int32 indices halve the index traffic of the kernel.
        small = max(num_src, num_dst, index.size(1)) < 2**31 - 1
        idx_dtype = torch.int32 if small else torch.long
        rowptr = index2ptr(index[0], num_dst).to(idx_dtype)
        col = index[1].to(idx_dtype)
        out = cls._trusted(rowptr, col, value, (num_dst, num_src),
                           symmetric)
        out._row = index[0]
        if symmetric and check_symmetric:
            out.check_symmetric()
        return out

    # Properties ##############################################################

    def size(self, dim: Optional[int] = None) -> Any:
        r"""``(num_rows, num_cols)``, or one of them."""
        return self.sparse_size if dim is None else self.sparse_size[dim]

    def nnz(self) -> int:
        r"""Number of stored non-zeros."""
        return self.col.numel()

    @property
    def device(self) -> torch.device:
        return self.value.device

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    def row(self) -> Tensor:
        r"""``int64`` row of each non-zero (cached)."""
        if self._row is None:
            self._row = ptr2index(self.rowptr.long(), self.nnz())
        return self._row

    def csr(self, value: OptTensor = None) -> Tensor:
        r"""The matrix as a detached :obj:`torch.sparse_csr` tensor."""
        # First, so that caches of a replaced value are dropped on every
        # path, not kept alive by the uncached ones.
        self._sync_value_caches()
        if value is None and self.value.requires_grad:
            # Not cached: the values may change between calls (training).
            value = self.value
        if value is not None:
            _check_values(value, self.nnz())
            return csr_tensor(self.rowptr, self.col, value.detach(),
                              self.sparse_size)
        if self._csr is None:
            self._csr = csr_tensor(self.rowptr, self.col,
                                   self.value.detach(), self.sparse_size)
        return self._csr

    def csr_t(self, value: OptTensor = None) -> Tensor:
        r"""The transposed matrix as a detached :obj:`torch.sparse_csr`
        tensor; for a symmetric matrix, the matrix itself."""
        if self.symmetric:
            return self.csr(value)
        self._sync_value_caches()
        t_rowptr, t_col, perm = self._transpose_index()
        if value is None and not self.value.requires_grad:
            if self._csr_t is None:
                self._csr_t = csr_tensor(t_rowptr, t_col, self.value[perm],
                                         self.sparse_size[::-1])
            return self._csr_t
        value = self.value if value is None else value
        _check_values(value, self.nnz())
        return csr_tensor(t_rowptr, t_col, value.detach()[perm],
                          self.sparse_size[::-1])

    def _transpose_index(self) -> Tuple[Tensor, Tensor, Tensor]:
        r"""``(rowptr, col, perm)`` of the transpose (cached), where
        :obj:`perm` maps its non-zeros to those of the matrix."""
        if self._t is None:
            row, col = self.row(), self.col.long()
            perm = torch.argsort(col * self.sparse_size[0] + row)
            # Column ids were checked when the matrix was made.
            t_rowptr = index2ptr(col[perm], self.sparse_size[1])
            self._t = (t_rowptr.to(self.col.dtype), row[perm].to(
                self.col.dtype), perm)
        return self._t

    def check_symmetric(self, rtol: Optional[float] = None) -> None:
        r"""Raises :class:`ValueError` unless the matrix equals its
        transpose: the same pattern, and each value within :obj:`rtol` of
        its mirror, relative to the smaller of the two (default:
        :math:`\max(10^{-6}, 8\epsilon)` of the values' dtype). NaN values
        are not symmetric."""
        n = self.sparse_size[0]
        if self.sparse_size[0] != self.sparse_size[1]:
            raise ValueError(f'matrix of size {self.sparse_size} is not '
                             f'square, so it cannot be symmetric')
        row, col, value = self.row(), self.col.long(), self.value.detach()
        key = row * n + col
        key_t, perm = torch.sort(col * n + row)
        if not torch.equal(key, key_t):
            raise ValueError('symmetric=True, but the sparsity pattern is '
                             'not symmetric')
        if value.numel() == 0:
            return
        if rtol is None:
            rtol = max(1e-6, 8 * torch.finfo(value.dtype).eps)
        # Entry by entry, relative: one tolerance scaled by the largest
        # value let small entries differ completely, and the backward pass
        # (which multiplies by the matrix, not its transpose) be wrong.
        mirror = value[perm]
        close = torch.isclose(value, mirror, rtol=rtol, atol=0.0)
        if not bool(close.all()):
            bad = int((~close).nonzero()[0])
            i, j = int(row[bad]), int(col[bad])
            raise ValueError(f'symmetric=True, but the values are not '
                             f'symmetric (entry ({i}, {j}) is '
                             f'{float(value[bad]):.9g}, entry ({j}, {i}) '
                             f'{float(mirror[bad]):.9g})')

    # Conversions #############################################################

    def matmul(self, x: Tensor) -> Tensor:
        r"""Differentiable :math:`\mathbf{M} \mathbf{X}` (gradients for
        :obj:`x` and, if it requires them, :obj:`value`)."""
        if x.size(0) != self.sparse_size[1]:
            raise ValueError(f'Cannot multiply a sparse matrix of size '
                             f'{self.sparse_size} with features of '
                             f'{x.size(0)} rows')
        if x.dtype != self.value.dtype:
            raise ValueError(f"dtype mismatch: adjacency is {self.value.dtype}"
                             f" but features are {x.dtype}")
        if x.dim() != 2:
            raise ValueError(f'expected 2-D features (got {x.dim()}-D)')
        if x.device != self.device:
            raise ValueError(f'device mismatch: adjacency is on '
                             f'{self.device} but features are on {x.device} '
                             f'(move both, e.g. with data.to(device))')
        return SparseAdjMM.apply(self.value, x, self)

    def t(self) -> 'SparseAdj':
        r"""The transposed matrix."""
        if self.symmetric:
            return self
        return self._transposed(self.value)

    def _transposed(self, value: Tensor) -> 'SparseAdj':
        r"""The transpose of the matrix with values :obj:`value` (on the
        stored pattern), differentiable with respect to them."""
        t_rowptr, t_col, perm = self._transpose_index()
        out = SparseAdj._trusted(t_rowptr, t_col, value[perm],
                                 self.sparse_size[::-1], self.symmetric)
        out._t = (self.rowptr, self.col, torch.argsort(perm))
        return out

    def to_edge_index(self) -> Tuple[EdgeIndex, Tensor]:
        r"""The graph as ``(edge_index, edge_weight)``: a column-sorted
        :class:`~torch_geometric.EdgeIndex` (sources, targets) of
        :math:`\mathbf{A}` (the matrix itself holds :math:`\mathbf{A}^\top`)
        and :obj:`value`, edge :math:`k` being the :math:`k`-th stored
        non-zero: the layout of ``to_adj(..., backend='edge_index')``."""
        edge_index = torch.stack([self.col.long(), self.row()])
        return EdgeIndex(edge_index, sparse_size=self.sparse_size[::-1],
                         sort_order='col'), self.value

    def to(self, *args: Any, **kwargs: Any) -> 'SparseAdj':
        r"""Moves to a device and/or casts the values (indices keep their
        dtype)."""
        return self._with_value(self.value.to(*args, **kwargs))

    # PyG's `data.cuda()` / `data.cpu()` call these on every attribute and
    # silently keep any object that lacks them where it was.
    def cuda(self, device: Any = None,
             non_blocking: bool = False) -> 'SparseAdj':
        r"""The matrix on a CUDA device (as :meth:`torch.Tensor.cuda`)."""
        return self._with_value(self.value.cuda(device,
                                                non_blocking=non_blocking))

    def cpu(self) -> 'SparseAdj':
        r"""The matrix in CPU memory."""
        return self._with_value(self.value.cpu())

    def _with_value(self, value: Tensor) -> 'SparseAdj':
        device = value.device
        out = SparseAdj._trusted(self.rowptr.to(device), self.col.to(device),
                                 value, self.sparse_size, self.symmetric)
        if self._row is not None:
            out._row = self._row.to(device)
        if self._t is not None:
            out._t = tuple(t.to(device) for t in self._t)
        return out

    # The tensor methods that PyG's `data.clone()`, `data.detach()`,
    # `data.share_memory_()` etc. call on every attribute: an object without
    # them is silently kept as it is, shared between the copies.
    def _tensors(self) -> Iterator[Tensor]:
        yield from (self.rowptr, self.col, self.value)
        if self._row is not None:
            yield self._row
        if self._t is not None:
            yield from self._t

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> 'SparseAdj':
        r"""A matrix of :obj:`fn` applied to each tensor, or the matrix
        itself (caches included) if :obj:`fn` returns them all unchanged,
        as the tensor methods do."""
        old = list(self._tensors())
        new = [fn(x) for x in old]
        if all(a is b for a, b in zip(new, old)):
            return self
        out = SparseAdj._trusted(new[0], new[1], new[2], self.sparse_size,
                                 self.symmetric)
        rest = new[3:]
        if self._row is not None:
            out._row, rest = rest[0], rest[1:]
        if self._t is not None:
            out._t = (rest[0], rest[1], rest[2])
        return out

    def clone(self) -> 'SparseAdj':
        r"""A copy with its own memory (as :meth:`torch.Tensor.clone`,
        differentiable with respect to :obj:`value`)."""
        return self._apply(lambda x: x.clone())

    def detach(self) -> 'SparseAdj':
        r"""The matrix with :obj:`value` detached from the graph (memory
        shared, as :meth:`torch.Tensor.detach`)."""
        return self._apply(lambda x: x.detach())

    def contiguous(self) -> 'SparseAdj':
        r"""The matrix with contiguous tensors (itself if they are)."""
        return self._apply(lambda x: x.contiguous())

    def pin_memory(self) -> 'SparseAdj':
        r"""The matrix in pinned memory (itself if it is)."""
        return self._apply(lambda x: x.pin_memory())

    def share_memory_(self) -> 'SparseAdj':
        r"""Moves the tensors to shared memory (in place)."""
        for x in self._tensors():
            x.share_memory_()
        return self

    def detach_(self) -> 'SparseAdj':
        r"""Detaches :obj:`value` from the graph (in place)."""
        self.value.detach_()
        return self

    def requires_grad_(self, requires_grad: bool = True) -> 'SparseAdj':
        r"""Sets whether gradients are recorded for :obj:`value`."""
        self.value.requires_grad_(requires_grad)
        return self

    def record_stream(self, stream: Any) -> None:
        r"""As :meth:`torch.Tensor.record_stream`, for each tensor."""
        for x in self._tensors():
            x.record_stream(stream)

    # Sparse CSR tensors support neither `copy.deepcopy` nor serialisation
    # of their storage; the cached ones are views, rebuilt on demand.
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_csr=None, _csr_t=None, _cache_key=None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_value_caches()

    def to_dense(self) -> Tensor:
        r"""The dense ``num_rows x num_cols`` matrix (for tests)."""
        out = self.value.new_zeros(self.sparse_size)
        return out.index_put((self.row(), self.col.long()), self.value,
                             accumulate=True)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(size={self.sparse_size}, '
                f'nnz={self.nnz()}, symmetric={self.symmetric}, '
                f'dtype={self.dtype}, device={self.device})')


class SparseAdjMM(torch.autograd.Function):
    r"""``out = M @ x`` for a :class:`SparseAdj` :math:`\mathbf{M}`.

    Backward: :math:`\partial x = \mathbf{M}^\top \partial out` (the same CSR
    matrix if :math:`\mathbf{M}` is symmetric, else the cached transpose) and
    :math:`\partial m_{ij} = \langle \partial out_i, x_j \rangle` on the
    stored non-zeros only. With ``create_graph=True`` the backward pass is
    built from differentiable operations (this function on the transpose),
    so higher-order gradients work too.
    """
    @staticmethod
    def forward(ctx: Any, value: Tensor, x: Tensor,
                adj: SparseAdj) -> Tensor:
        ctx.adj = adj
        own_value = value is adj.value
        # A weak reference, because tensors unpacked in backward are not
        # guaranteed to be the same Python objects: backward may only use
        # the caches of `adj` if it still holds this very tensor.
        ctx.value_ref = weakref.ref(value) if own_value else None
        ctx.save_for_backward(value, x if value.requires_grad else None)
        return _csr_mm(adj.csr(None if own_value else value), x)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> Tuple[OptTensor, OptTensor,
                                                      None]:
        adj: SparseAdj = ctx.adj
        # An in-place edit of `value` since forward fails here already:
        value, x = ctx.saved_tensors
        own_value = (ctx.value_ref is not None
                     and ctx.value_ref() is adj.value)
        grad_value = grad_x = None
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():
                # `create_graph=True`: the gradient must be differentiable
                # with respect to `grad_out` (and `value`). A trainable
                # symmetric matrix needs the true transpose too, so that
                # each entry receives its own second-order gradient.
                if adj.symmetric and not value.requires_grad:
                    adj_t, value_t = adj, value
                else:
                    adj_t = adj._transposed(value)
                    value_t = adj_t.value
                grad_x = SparseAdjMM.apply(value_t, grad_out, adj_t)
            else:
                csr_t = adj.csr_t(None if own_value else value)
                grad_x = _csr_mm(csr_t, grad_out)
        if ctx.needs_input_grad[0]:
            row, col = adj.row(), adj.col.long()
            grad_value = (grad_out.index_select(0, row) *
                          x.index_select(0, col)).sum(dim=-1)
        return grad_value, grad_x, None


# Construction ################################################################


def _check_float_weight(edge_weight: Tensor) -> None:
    # Integer weights would make an integer matrix, refused only later by
    # the product, as a dtype mismatch with the features.
    if not edge_weight.is_floating_point():
        raise ValueError(f"'edge_weight' must be floating-point (got "
                         f"{edge_weight.dtype})")


def _check_values(value: Tensor, nnz: int) -> None:
    # O(1) on every product: `value` may be reassigned, and a CSR tensor
    # made with fewer values than columns is read out of bounds.
    if value.shape != (nnz, ):
        raise ValueError(f"'value' must have shape [{nnz}], one per stored "
                         f"non-zero (got {list(value.shape)})")


def _resolve_size(edge_index: Tensor, size: SizeLike) -> Tuple[int, int]:
    if size is None:
        n = int(edge_index.max()) + 1 if edge_index.numel() else 0
        return n, n
    if getattr(size, 'ndim', 0) == 1:  # a tensor or array of sizes
        size = size.tolist()
    try:
        # operator.index, not int(): a float size would be truncated
        # silently (NumPy and 0-d tensor integers are fine).
        sizes = tuple(
            operator.index(n) if not isinstance(n, bool) else None
            for n in (size if isinstance(size, (tuple, list, range))
                      else (size, size)))
    except TypeError:
        sizes = ()
    if len(sizes) != 2 or None in sizes or min(sizes) < 0:
        raise ValueError(f'size must be a number of nodes or a pair '
                         f'(num_src, num_dst) of them, non-negative integers '
                         f'(got {size!r})')
    return sizes[0], sizes[1]


def resolve_backend(backend: str) -> str:
    r"""Maps ``'auto'`` to the default backend and validates the name."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}' (expected one of "
                         f"{', '.join(BACKENDS)})")
    if backend == 'auto':
        return DEFAULT_BACKEND
    if (backend == 'sparse_tensor'
            and not torch_geometric.typing.WITH_TORCH_SPARSE):
        raise ImportError("backend 'sparse_tensor' needs the 'torch-sparse' "
                          "package, which is not installed")
    return backend


def to_adj(
    edge_index: Tensor,
    edge_weight: OptTensor = None,
    num_nodes: SizeLike = None,
    backend: str = 'auto',
    symmetric: bool = False,
    check_symmetric: bool = True,
) -> Tuple[Union[Adj, SparseAdj], OptTensor]:
    r"""Turns a weighted edge list into the adjacency a layer in
    :mod:`pyg_mmrec.nn.conv` consumes, for the chosen backend.

    Messages flow from :obj:`edge_index[0]` to :obj:`edge_index[1]`; sparse
    backends hold :math:`\mathbf{A}^\top` (PyG's :obj:`adj_t`).
    The result is a pair ``(adj, weight)`` meant to be passed on as
    ``conv(x, adj, weight)``: :obj:`weight` is :obj:`None` for backends that
    store the weights inside :obj:`adj`.

    Args:
        edge_index (Tensor): ``[2, E]`` edges (source, target).
        edge_weight (Tensor, optional): ``[E]`` weights (default: ones).
        num_nodes (int or (int, int), optional): Number of nodes, or
            ``(num_src, num_dst)`` of a bipartite graph.
        backend (str): One of :obj:`BACKENDS` (default: ``'auto'``).
        symmetric (bool): State that the weighted adjacency is symmetric.
            Only the ``'sparse_adj'`` backend uses it (transpose-free
            backward); it is verified once unless :obj:`check_symmetric` is
            :obj:`False`. Never inferred: a wrong guess would silently corrupt
            gradients.
        check_symmetric (bool): Verify :obj:`symmetric` at construction.
    """
    backend = resolve_backend(backend)
    num_src, num_dst = _resolve_size(edge_index, num_nodes)
    check_edge_index(edge_index, num_src, num_dst, edge_weight)
    if edge_weight is not None:
        _check_float_weight(edge_weight)

    if backend == 'scatter':
        return edge_index, edge_weight

    if backend == 'sparse_adj':
        return SparseAdj.from_edge_index(
            edge_index, edge_weight, (num_src, num_dst), symmetric,
            check_symmetric), None

    if backend == 'edge_index':
        # Column-sorted so that layers can take the fused
        # `EdgeIndex.matmul(..., transpose=True)` path. The key is int64
        # since it would overflow int32 beyond 46340 nodes.
        perm = torch.argsort(edge_index[1].long() * max(num_src, 1) +
                             edge_index[0])
        ei = EdgeIndex(edge_index[:, perm], sparse_size=(num_src, num_dst),
                       sort_order='col')
        return ei, None if edge_weight is None else edge_weight[perm]

    weight = edge_weight
    if weight is None:
        weight = torch.ones(edge_index.size(1), device=edge_index.device)
    # int64, as the sparse layouts need it and `coalesce`'s sort key would
    # overflow int32 beyond 46340 nodes.
    index = torch.stack([edge_index[1], edge_index[0]]).long()
    index, weight = coalesce(index, weight, max(num_src, num_dst, 1),
                             reduce='sum')
    if backend == 'sparse_tensor':
        return SparseTensor(row=index[0], col=index[1], value=weight,
                            sparse_sizes=(num_dst, num_src),
                            is_sorted=True), None
    coo = torch.sparse_coo_tensor(index, weight, (num_dst, num_src),
                                  is_coalesced=True, check_invariants=False)
    if backend == 'coo':
        return coo, None
    return coo.to_sparse_csr(), None


def sym_norm_adj(
    edge_index: Tensor,
    num_users: int,
    num_items: int,
    edge_weight: OptTensor = None,
    backend: str = 'auto',
    dtype: torch.dtype = torch.float32,
) -> Tuple[Union[Adj, SparseAdj], OptTensor]:
    r"""DiffMM's :math:`\mathbf{A} = \mathbf{D}^{-1/2} \bar{\mathbf{A}}
    \mathbf{D}^{-1/2}` (self-loops included) of the user-item edges
    :obj:`edge_index` (item ids from 0), ready for
    :class:`~pyg_mmrec.nn.conv.SymNormConv` on ``U + I`` nodes.

    Built by :func:`pyg_mmrec.graph.sym_norm_bipartite`, which makes the
    matrix symmetric by construction, so it is marked symmetric without a
    check. Returns ``(adj, weight)`` like :func:`to_adj`.
    """
    index, weight = sym_norm_bipartite(edge_index, num_users, num_items,
                                       edge_weight, add_self_loops=True,
                                       dtype=dtype)
    return to_adj(index, weight, num_users + num_items, backend=backend,
                  symmetric=True, check_symmetric=False)


# Dispatch used by the layers' `message_and_aggregate` ########################


def sparse_matmul(adj_t: Union[Adj, SparseAdj], x: Tensor,
                  edge_weight: OptTensor = None) -> Tensor:
    r"""Fused :math:`\mathbf{A}^\top \mathbf{X}` for every sparse adjacency
    type the layers accept.

    Args:
        adj_t: A :class:`SparseAdj`, a :class:`torch_sparse.SparseTensor`, a
            :class:`torch.sparse` COO/CSR tensor (all holding
            :math:`\mathbf{A}^\top`), or a column-sorted
            :class:`~torch_geometric.EdgeIndex` (holding :math:`\mathbf{A}`,
            weights in :obj:`edge_weight`).
        x (Tensor): Source node features.
        edge_weight (Tensor, optional): Weights of an :class:`EdgeIndex`.
    """
    if isinstance(adj_t, SparseAdj):
        return adj_t.matmul(x)
    # O(1): some kernels (torch_sparse's, behind a weighted EdgeIndex that
    # needs gradients) read features beyond the rows given.
    check_fused_size(adj_t, x.size(0))
    if isinstance(adj_t, EdgeIndex) and adj_t.num_rows is None:
        # Unsized: the largest source id decides (one synchronisation).
        num_src = adj_t.get_sparse_size(0)
        if num_src > x.size(0):
            raise ValueError(f'adjacency has source id {num_src - 1} but the '
                             f'features have {x.size(0)} rows')
    if isinstance(adj_t, EdgeIndex):
        if (adj_t.device.type == 'cpu'
                and x.dtype in (torch.float16, torch.bfloat16)):
            # EdgeIndex.matmul takes MKL's CSR kernel, which has no
            # half-precision version on CPU: gather and add instead.
            if edge_weight is not None and edge_weight.dtype != x.dtype:
                # As the other backends do, rather than promote silently.
                raise ValueError(f'dtype mismatch: edge_weight is '
                                 f'{edge_weight.dtype} but x is {x.dtype}')
            src, dst = adj_t.as_tensor().long()
            msg = x.index_select(0, src)
            if edge_weight is not None:
                msg = msg * edge_weight.view(-1, 1)
            return scatter(msg, dst, dim=0, dim_size=adj_t.get_sparse_size(1),
                           reduce='sum')
        if adj_t.num_rows != adj_t.num_cols:
            # PyG 2.8's `matmul(..., transpose=True)` builds its backward
            # matrix with swapped sizes, which fails on rectangular graphs;
            # the flipped (row-sorted) view takes the correct path.
            return adj_t.flip(0).matmul(x, input_value=edge_weight)
        return adj_t.matmul(x, input_value=edge_weight, transpose=True)
    if is_torch_sparse_tensor(adj_t) and adj_t.layout == torch.sparse_coo:
        # PyG's `spmm` would convert COO to CSR on every call.
        return torch.sparse.mm(adj_t, x)
    if (is_torch_sparse_tensor(adj_t) and adj_t.layout == torch.sparse_csr
            and adj_t.device.type == 'cpu'
            and x.dtype in (torch.float16, torch.bfloat16)):
        # The MKL kernel behind `spmm` has no half-precision version;
        # PyTorch's own one (as used by `SparseAdj`) has.
        return torch.sparse.mm(adj_t, x, 'sum')
    return spmm(adj_t, x, reduce='sum')


def adj_size(adj_t: Union[Adj, SparseAdj]) -> Tuple[Optional[int],
                                                    Optional[int]]:
    r"""``(num_src, num_dst)`` of an adjacency, :obj:`None` where it does
    not know (a plain :obj:`edge_index`, an :class:`EdgeIndex` without
    sizes)."""
    if isinstance(adj_t, SparseAdj):
        return adj_t.size(1), adj_t.size(0)
    if isinstance(adj_t, EdgeIndex):  # holds A, not A^T
        return adj_t.num_rows, adj_t.num_cols
    if isinstance(adj_t, SparseTensor) or is_torch_sparse_tensor(adj_t):
        return adj_t.size(1), adj_t.size(0)
    return None, None


def check_fused_size(adj_t: Union[Adj, SparseAdj], num_src: int,
                     num_dst: Optional[int] = None) -> None:
    r"""Raises :class:`ValueError` if a sized adjacency does not fit source
    features of :obj:`num_src` rows (and :obj:`num_dst` targets)."""
    src, dst = adj_size(adj_t)
    if src is not None and src != num_src:
        raise ValueError(f'adjacency expects {src} source nodes but the '
                         f'features have {num_src} rows')
    if num_dst is not None and dst is not None and dst != num_dst:
        raise ValueError(f'adjacency has {dst} target nodes but the target '
                         f'features have {num_dst} rows')
