r"""Ranking and contrastive losses shared by the models."""
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.models.lightgcn import BPRLoss

__all__ = ['BPRLoss', 'bpr_loss', 'info_nce', 'grace_info_nce']


def bpr_loss(pos_score: Tensor, neg_score: Tensor) -> Tensor:
    r"""The mean Bayesian Personalized Ranking loss

    .. math::
        \mathcal{L}_{\mathrm{BPR}} = -\frac{1}{|B|} \sum_{(u, i^+, i^-) \in B}
        \log \sigma(\hat{y}_{ui^+} - \hat{y}_{ui^-}).

    Without regularisation this equals PyG's
    :class:`~torch_geometric.nn.models.lightgcn.BPRLoss` (re-exported here as
    :class:`BPRLoss` for the variant with an :math:`L_2` term).

    Args:
        pos_score (Tensor): ``[B]`` scores of the positive pairs.
        neg_score (Tensor): ``[B]`` scores of the negative pairs.
    """
    if pos_score.shape != neg_score.shape:
        raise ValueError(f'pos_score and neg_score must have the same shape, '
                         f'got {tuple(pos_score.shape)} and '
                         f'{tuple(neg_score.shape)}')
    return -F.logsigmoid(pos_score - neg_score).mean()


class _ChunkedLogSumExp(torch.autograd.Function):
    r""":math:`\ell_n = \log \sum_j \exp(\langle \mathbf{q}_n, \mathbf{k}_j
    \rangle / \tau)` over key chunks; the backward pass recomputes the
    chunks, so neither pass holds more than ``[B, chunk]`` similarities."""
    @staticmethod
    def forward(ctx: Any, query: Tensor, keys: Tensor, temperature: float,
                chunk_size: int) -> Tensor:
        lse = torch.full((query.size(0), ), -float('inf'), dtype=query.dtype,
                         device=query.device)
        for start in range(0, keys.size(0), chunk_size):
            sim = query.matmul(keys[start:start + chunk_size].t())
            lse = torch.logaddexp(lse, torch.logsumexp(sim / temperature, 1))
        ctx.save_for_backward(query, keys, lse)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        return lse

    @staticmethod
    def backward(ctx: Any, grad: Tensor
                 ) -> Tuple[Optional[Tensor], Optional[Tensor], None, None]:
        query, keys, lse = ctx.saved_tensors
        tau, chunk_size = ctx.temperature, ctx.chunk_size
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_q = torch.zeros_like(query) if need_q else None
        grad_k = torch.empty_like(keys) if need_k else None
        for start in range(0, keys.size(0), chunk_size):
            k = keys[start:start + chunk_size]
            # d lse_n / d sim_nj = softmax_j(sim_n / tau) / tau
            prob = torch.exp(query.matmul(k.t()) / tau - lse.view(-1, 1))
            weighted = prob.mul_(grad.view(-1, 1) / tau)
            if grad_q is not None:
                grad_q.addmm_(weighted, k)
            if grad_k is not None:
                grad_k[start:start + chunk_size] = weighted.t().matmul(query)
        return grad_q, grad_k, None, None


class _BoundedLogSumExp(torch.autograd.Function):
    r""":math:`\ell_n = \log \sum_j \exp(\langle \mathbf{q}_n,
    \mathbf{k}_j \rangle)` for logits known to be bounded (L2-normalised
    views scaled by :math:`1/\tau \le 40`), where the exponentials and
    their sums cannot overflow in float32 or bfloat16 (float16 can) and
    need no max-subtraction. Scalings are folded into the
    ``[B, d]`` operands, so each chunk costs one matrix product and one
    ``exp`` in the forward pass and two products in the backward pass; the
    exponentials are kept for the backward pass only when the keys fit in
    one chunk (memory stays ``[B, chunk]``)."""
    @staticmethod
    def forward(ctx: Any, query: Tensor, keys: Tensor,
                chunk_size: int) -> Tensor:
        total = query.new_zeros(query.size(0))
        single = keys.size(0) <= chunk_size
        exp_sim = None
        for start in range(0, keys.size(0), chunk_size):
            exp_sim = query.matmul(keys[start:start + chunk_size].t()).exp_()
            total += exp_sim.sum(dim=1)
        ctx.save_for_backward(query, keys, total,
                              exp_sim if single else None)
        ctx.chunk_size = chunk_size
        return total.log()

    @staticmethod
    def backward(ctx: Any, grad: Tensor
                 ) -> Tuple[Optional[Tensor], Optional[Tensor], None]:
        query, keys, total, exp_sim = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        # d lse_n / d sim_nj = exp(sim_nj) / total_n: scale rows, not blocks.
        weight = (grad / total).view(-1, 1)
        need_q, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_q = torch.zeros_like(query) if need_q else None
        grad_k = torch.empty_like(keys) if need_k else None
        weighted_query = query * weight if need_k else None
        for start in range(0, keys.size(0), chunk_size):
            k = keys[start:start + chunk_size]
            e = exp_sim if exp_sim is not None else \
                query.matmul(k.t()).exp_()
            if grad_q is not None:
                grad_q.addmm_(e, k)
            if grad_k is not None:
                grad_k[start:start + chunk_size] = e.t().matmul(
                    weighted_query)
        if grad_q is not None:
            grad_q.mul_(weight)
        return grad_q, grad_k, None


def info_nce(z1: Tensor, z2: Tensor, index: Tensor, temperature: float = 0.5,
             chunk_size: Optional[int] = 4096,
             normalize: bool = False) -> Tensor:
    r"""DiffMM's InfoNCE between two views whose negatives are *all* nodes of
    the second view:

    .. math::
        \mathcal{L}_{\mathrm{cl}}(\mathbf{z}^1, \mathbf{z}^2, B) =
        -\frac{1}{|B|} \sum_{n \in B} \log
        \frac{\exp(\langle \mathbf{z}^1_n, \mathbf{z}^2_n \rangle / \tau)}
        {\sum_{j} \exp(\langle \mathbf{z}^1_n, \mathbf{z}^2_j \rangle / \tau)}

    The denominator is a log-sum-exp over chunks of :obj:`chunk_size` rows of
    :math:`\mathbf{z}^2` in both the forward and the backward pass, so memory
    is :math:`O(|B| \cdot \mathrm{chunk})` instead of :math:`O(|B| \cdot N)`;
    the value and gradients do not depend on the chunk size (up to
    floating-point rounding). Repeated ids in :obj:`index` are computed once
    and weighted by their count (the mean is unchanged).

    Args:
        z1 (Tensor): ``[N, d]`` first view, **expected L2-normalised** (as in
            the formula); pass :obj:`normalize=True` to normalise here.
        z2 (Tensor): ``[N', d]`` second view, same convention.
        index (Tensor): ``[B]`` node ids :math:`B` (rows of both views).
        temperature (float): :math:`\tau`.
        chunk_size (int, optional): Rows of :math:`\mathbf{z}^2` per chunk;
            :obj:`None` computes the ``[B, N']`` matrix at once.
        normalize (bool): Row-normalise :obj:`z1` and :obj:`z2` first. The
            logits are then bounded by :math:`1/\tau`, which enables a
            faster kernel without max-subtraction (not in float16, whose
            sums of exponentials could overflow).
    """
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    if z1.size(-1) != z2.size(-1):
        raise ValueError(f'z1 and z2 must have the same number of columns, '
                         f'got {z1.size(-1)} and {z2.size(-1)}')
    if index.dim() != 1 or index.dtype not in (torch.int32, torch.long):
        raise ValueError(f"'index' must be a 1-D integer tensor of node ids "
                         f"(got {index.dim()}-D {index.dtype})")
    if index.numel() == 0:
        raise ValueError("'index' is empty: the loss is a mean over its "
                         "nodes")
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    unique, inverse = torch.unique(index, return_inverse=True)
    # Sorted, so its ends bound every id (unique() has synchronised with
    # the device already). A negative id would index from the end.
    num_nodes = min(z1.size(0), z2.size(0))
    smallest, largest = unique[[0, -1]].tolist()
    if smallest < 0 or largest >= num_nodes:
        bad = smallest if smallest < 0 else largest
        raise ValueError(f"'index' holds node id {bad}, outside the rows "
                         f"0..{num_nodes - 1} of both views")
    weight = torch.bincount(inverse, minlength=unique.numel()).to(z1.dtype)
    query = z1[unique]
    pos = (query * z2[unique]).sum(dim=-1) / temperature
    if chunk_size is None:
        lse = torch.logsumexp(query.matmul(z2.t()) / temperature, dim=1)
    elif normalize and temperature >= 0.025 and query.dtype != torch.float16:
        # (float16 overflows past 65504: exp(1/tau) summed over all nodes.)
        lse = _BoundedLogSumExp.apply(query / temperature, z2, chunk_size)
    else:
        lse = _ChunkedLogSumExp.apply(query, z2, temperature, chunk_size)
    return ((lse - pos) * weight).sum() / index.numel()


def grace_info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.5,
                   symmetric: bool = True, normalize: bool = True) -> Tensor:
    r"""The GRACE-style InfoNCE used by MMSSL over a batch: for node
    :math:`n` the positive is :math:`\mathbf{z}^2_n` and the negatives are the
    other batch nodes of *both* views,

    .. math::
        \ell(\mathbf{z}^1_n, \mathbf{z}^2_n) = -\log
        \frac{e^{\theta(\mathbf{z}^1_n, \mathbf{z}^2_n) / \tau}}
        {\sum_{k} e^{\theta(\mathbf{z}^1_n, \mathbf{z}^2_k) / \tau} +
        \sum_{k \neq n} e^{\theta(\mathbf{z}^1_n, \mathbf{z}^1_k) / \tau}}

    with :math:`\theta` the cosine similarity; the loss is
    :math:`\frac{1}{2|B|} \sum_n [\ell(\mathbf{z}^1_n, \mathbf{z}^2_n) +
    \ell(\mathbf{z}^2_n, \mathbf{z}^1_n)]` if :obj:`symmetric`, else the
    mean of the first term.

    Args:
        z1 (Tensor): ``[B, d]`` first view of the batch nodes.
        z2 (Tensor): ``[B, d]`` second view (row :math:`n` is the positive
            of row :math:`n` of :obj:`z1`).
        temperature (float): :math:`\tau` (default: :obj:`0.5`).
        symmetric (bool): Average both directions (default: :obj:`True`).
        normalize (bool): L2-normalise the rows first, so that
            :math:`\theta` is the cosine (default: :obj:`True`); set it to
            :obj:`False` only for inputs already normalised.
    """
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    if z1.shape != z2.shape:
        raise ValueError(f'z1 and z2 must have the same shape, got '
                         f'{tuple(z1.shape)} and {tuple(z2.shape)}')
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)

    def one_side(a: Tensor, b: Tensor) -> Tensor:
        between = a.matmul(b.t()) / temperature
        within = a.matmul(a.t()) / temperature
        within = within.masked_fill(
            torch.eye(a.size(0), dtype=torch.bool, device=a.device),
            -float('inf'))
        denom = torch.logsumexp(torch.cat([between, within], dim=1), dim=1)
        return denom - between.diagonal()

    loss = one_side(z1, z2)
    if symmetric:
        loss = 0.5 * (loss + one_side(z2, z1))
    return loss.mean()
