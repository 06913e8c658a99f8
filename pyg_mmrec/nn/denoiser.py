r"""DiffMM's denoiser network :math:`g_m(\mathbf{x}_t, t)`."""
import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Dropout, Linear, Module

from pyg_mmrec.nn._screened_topk import (
    ScreenBound,
    screen_weights,
    screened_topk,
)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0
                       ) -> Tensor:
    r"""The sinusoidal embedding of integer time steps

    .. math::
        \mathrm{emb}(t) = [\cos(t\,\omega_0), \ldots, \cos(t\,\omega_{h-1}),
        \sin(t\,\omega_0), \ldots, \sin(t\,\omega_{h-1})],
        \qquad \omega_k = P^{-k/h}, \; h = \lfloor \mathrm{dim}/2 \rfloor,

    with :math:`P` = :obj:`max_period`, padded with one zero column when
    :obj:`dim` is odd.

    Args:
        t (Tensor): ``[B]`` time steps.
        dim (int): The embedding size.
        max_period (float): The longest period :math:`P`.

    Returns:
        ``[B, dim]`` float32 embeddings.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) *
                      torch.arange(half, dtype=torch.float32, device=t.device)
                      / half)
    args = t.to(torch.float32).view(-1, 1) * freqs.view(1, -1)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class ReverseFold(NamedTuple):
    r"""Weights of :class:`Denoiser` folded for the hidden-space reverse
    process, see :meth:`Denoiser.fold_reverse`."""
    w1_x_t: Tensor  # [I, H]: first layer, item part
    w2_w1: Tensor  # [H, H]: output layer followed by the first layer
    first: Tensor  # [H]: e_{T-1}
    shift: Tensor  # [T, H]: constant part of p_{t-1} (row 0 unused)
    coef1: Tuple[float, ...]
    coef2: Tuple[float, ...]
    screen: Optional[Tensor]  # [I, H + 1] low-precision [W_2, b_2]
    bound: Optional[ScreenBound]


def _init_linear(lin: Linear) -> None:
    torch.nn.init.xavier_normal_(lin.weight)
    if lin.bias is not None:
        torch.nn.init.normal_(lin.bias, 0.0, 0.001)


class Denoiser(Module):
    r"""The DiffMM denoiser :math:`g_m` that predicts the clean interaction
    row :math:`\hat{\mathbf{x}}_0` from a noisy one :math:`\mathbf{x}_t`:

    .. math::
        \mathbf{e}_t &= \mathrm{emb}(t)\, \mathbf{W}_e + \mathbf{b}_e \\
        \mathbf{h} &= \tanh\big([\mathrm{dropout}(\mathbf{x}_t) \,\Vert\,
        \mathbf{e}_t]\, \mathbf{W}_1 + \mathbf{b}_1\big) \\
        \hat{\mathbf{x}}_0 &= \mathbf{h}\, \mathbf{W}_2 + \mathbf{b}_2

    with :math:`\mathbf{W}_e \in \mathbb{R}^{10 \times 10}`,
    :math:`\mathbf{W}_1 \in \mathbb{R}^{(I+10) \times 1000}` and
    :math:`\mathbf{W}_2 \in \mathbb{R}^{1000 \times I}` by default. Weights
    are drawn from :math:`\mathcal{N}(0, \sigma^2)` with
    :math:`\sigma = \sqrt{2 / (\mathrm{fan_{in}} + \mathrm{fan_{out}})}`,
    biases from :math:`\mathcal{N}(0, 0.001^2)`.

    Args:
        num_items (int): Number of items :math:`I` (row length).
        hidden_channels (int): Hidden size (default: :obj:`1000`).
        time_channels (int): Size of the time embedding (default: :obj:`10`).
        dropout (float): Dropout on the input row (default: :obj:`0.5`).

    Shapes:
        - **input:** noisy rows :math:`(B, I)`, time steps :math:`(B)`
        - **output:** predicted clean rows :math:`(B, I)`
    """
    def __init__(self, num_items: int, hidden_channels: int = 1000,
                 time_channels: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f'num_items must be >= 1, got {num_items}')
        self.num_items = num_items
        self.hidden_channels = hidden_channels
        self.time_channels = time_channels
        self.time_lin = Linear(time_channels, time_channels)
        self.lin1 = Linear(num_items + time_channels, hidden_channels)
        self.lin2 = Linear(hidden_channels, num_items)
        self.dropout = Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        for lin in (self.time_lin, self.lin1, self.lin2):
            _init_linear(lin)

    def time_embedding(self, t: Tensor) -> Tensor:
        r"""The projected time embedding :math:`\mathbf{e}_t`,
        ``[B, time_channels]``."""
        emb = timestep_embedding(t, self.time_channels)
        return self.time_lin(emb.to(self.time_lin.weight.dtype))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): ``[B, I]`` noisy rows :math:`\mathbf{x}_t`.
            t (Tensor): ``[B]`` integer time steps.

        Returns:
            ``[B, I]`` predicted clean rows :math:`\hat{\mathbf{x}}_0`.
        """
        emb = self.time_embedding(t).to(x.dtype)
        h = torch.tanh(self.lin1(torch.cat([self._dropout(x), emb], dim=-1)))
        return self.lin2(h)

    def _dropout(self, x: Tensor) -> Tensor:
        p = self.dropout.p
        if not self.training or p == 0.0 or p == 1.0 or x.is_cuda:
            return self.dropout(x)
        # The same distribution as Dropout, whose CPU Bernoulli sampler is
        # about 3x slower than a uniform draw: on [B, I] rows it took a fifth
        # of a diffusion training step.
        keep = torch.rand_like(x) >= p
        return (x * keep).mul_(1.0 / (1.0 - p))

    @torch.no_grad()
    def fold_reverse(self, coef1: Sequence[float], coef2: Sequence[float],
                     screen_dtype: Optional[torch.dtype] = None,
                     hidden_dtype: Optional[torch.dtype] = None
                     ) -> ReverseFold:
        r"""Precomputes what :meth:`reverse_hidden` and :meth:`decode_topk`
        need for the posterior coefficients :math:`c^1_t, c^2_t`
        (``t = 0..T-1``); reuse it across user batches while the weights do
        not change.

        Args:
            coef1 (Sequence[float]): :math:`c^1_t`.
            coef2 (Sequence[float]): :math:`c^2_t`.
            screen_dtype (torch.dtype, optional): If set (e.g.
                :obj:`torch.bfloat16`), :meth:`decode_topk` screens items with
                a product in this dtype (see there); the result stays exact.
            hidden_dtype (torch.dtype, optional): If set (e.g.
                :obj:`torch.bfloat16`), the ``H x H`` products of
                :meth:`reverse_hidden` run in this dtype (accumulating in
                float32). Faster, but an approximation of the process.
        """
        num_steps = len(coef1)
        if len(coef2) != num_steps:
            raise ValueError(f'coef1 and coef2 differ in length '
                             f'({num_steps} vs {len(coef2)})')
        w1 = self.lin1.weight  # [H, I + C]
        w1_x = w1[:, :self.num_items]
        w2 = self.lin2.weight  # [I, H]
        steps = torch.arange(num_steps, device=w1.device)
        # e_t: time embedding through the first layer, plus its bias: [T, H].
        emb = F.linear(self.time_embedding(steps), w1[:, self.num_items:],
                       self.lin1.bias)
        b2_w1 = self.lin2.bias.matmul(w1_x.t())
        shift = torch.zeros_like(emb)
        for t in range(1, num_steps):
            shift[t] = coef1[t] * b2_w1 + emb[t - 1] - coef2[t] * emb[t]
        screen, bound = None, None
        if screen_dtype is not None:
            screen, bound = screen_weights(w2, self.lin2.bias, screen_dtype)
        return ReverseFold(
            w1_x_t=w1_x.t().contiguous(),
            w2_w1=w2.t().matmul(w1_x.t()).to(hidden_dtype or w2.dtype),
            first=emb[num_steps - 1].clone(),
            shift=shift,
            coef1=tuple(float(c) for c in coef1),
            coef2=tuple(float(c) for c in coef2),
            screen=screen,
            bound=bound,
        )

    @torch.no_grad()
    def reverse_hidden(self, x0: Tensor, fold: ReverseFold) -> Tensor:
        r"""Runs the deterministic reverse process of
        :class:`~pyg_mmrec.nn.GaussianDiffusion` in the hidden space and
        returns the hidden state :math:`\mathbf{h}^{(0)}` of the last step
        (so that :math:`\hat{\mathbf{x}}_0^{(0)} = \mathbf{h}^{(0)}
        \mathbf{W}_2 + \mathbf{b}_2`). Dropout is not applied (inference).

        Every reverse step is the affine posterior mean
        :math:`\mathbf{x}_{t-1} = c^1_t \hat{\mathbf{x}}_0^{(t)} + c^2_t
        \mathbf{x}_t` and :math:`g` starts with a linear map, so the
        pre-activation :math:`\mathbf{p}_t = \mathbf{x}_t \mathbf{W}_1^{x}
        + \mathbf{e}_t` of the first layer (:math:`\mathbf{e}_t` its time
        and bias part) obeys

        .. math::
            \mathbf{h}^{(t)} = \tanh(\mathbf{p}_t), \qquad
            \mathbf{p}_{t-1} = c^2_t \mathbf{p}_t + c^1_t\,
            \mathbf{h}^{(t)} \mathbf{W}_2 \mathbf{W}_1^{x}
            + c^1_t \mathbf{b}_2 \mathbf{W}_1^{x} + \mathbf{e}_{t-1}
            - c^2_t \mathbf{e}_t,

        one ``H x H`` product per step instead of two ``H x I`` products. It
        is the same function up to floating-point reassociation.

        Args:
            x0 (Tensor): ``[B, I]`` start rows :math:`\mathbf{x}_T`, dense or
                a sparse CSR tensor.
            fold (ReverseFold): The output of :meth:`fold_reverse`.

        Returns:
            ``[B, H]`` hidden state of the step ``t = 0``.
        """
        if x0.layout == torch.sparse_csr:
            # Rows are sparse: sum the first-layer columns of their items.
            crow, col = x0.crow_indices(), x0.col_indices()
            p = F.embedding_bag(col, fold.w1_x_t, crow[:-1], mode='sum',
                                per_sample_weights=x0.values())
        else:
            p = x0.matmul(fold.w1_x_t)
        p.add_(fold.first)
        low = fold.w2_w1.dtype != p.dtype
        for t in range(len(fold.coef1) - 1, 0, -1):
            h = torch.tanh(p)
            if low:
                prod = h.to(fold.w2_w1.dtype).matmul(fold.w2_w1)
                p = p.mul_(fold.coef2[t]).add_(prod, alpha=fold.coef1[t])
            else:
                p = torch.addmm(p, h, fold.w2_w1, beta=fold.coef2[t],
                                alpha=fold.coef1[t])
            p.add_(fold.shift[t])
        return p.tanh_()

    def decode(self, h: Tensor) -> Tensor:
        r"""The output layer, :math:`\mathbf{h} \mathbf{W}_2 +
        \mathbf{b}_2`."""
        return self.lin2(h)

    @torch.no_grad()
    def decode_topk(self, h: Tensor, k: int,
                    fold: Optional[ReverseFold] = None,
                    margin: int = 8, max_candidates: int = 256) -> Tensor:
        r"""The top-:obj:`k` item indices of :meth:`decode`, ``[B, k]``.

        With a screening fold (:meth:`fold_reverse` with
        :obj:`screen_dtype`), the scores are first computed from the rounded
        :math:`\tilde{\mathbf{h}}_b` and :math:`[\tilde{\mathbf{w}}_i,
        \tilde{b}_i]` (the bias as one more column) in the low precision,
        accumulated in float32 and rounded once to
        :math:`\tilde{s}_{bi}`. Since :math:`\tilde{\mathbf{h}}\cdot
        \tilde{\mathbf{w}} - \mathbf{h}\cdot\mathbf{w} =
        \tilde{\mathbf{h}}\cdot\delta\mathbf{w} + \delta\mathbf{h}
        \cdot\mathbf{w}`, Cauchy-Schwarz gives the rigorous bound

        .. math::
            s_{bi} \leq \bar{s}_{bi} + \lVert\delta\mathbf{h}_b\rVert
            \lVert\mathbf{w}_i\rVert +
            \lVert\tilde{\mathbf{h}}_b\rVert \big(\lVert\delta
            \mathbf{w}_i\rVert + \gamma \lVert\tilde{\mathbf{w}}_i
            \rVert\big) + |\delta b_i| + \gamma |\tilde{b}_i|

        with :math:`\bar{s}_{bi} = \tilde{s}_{bi} / (1 \mp u)` the
        largest sum that rounds to :math:`\tilde{s}_{bi}` (:math:`u` the
        unit roundoff of the screening dtype, :math:`\gamma = \gamma_{H+1}`
        the float32 accumulation bound, taken for truncating additions on
        CUDA's tensor cores). It uses the actual rounding errors
        :math:`\delta`, not their worst case, so it is tight.

        The best :obj:`k` + :obj:`margin` screened items of a row are
        rescored exactly; the row is done if its :obj:`k`-th exact score
        :math:`v_b` beats the bound of every other item (with the largest
        item norms). Otherwise every item whose own bound reaches
        :math:`v_b` is rescored exactly (or, beyond :obj:`max_candidates` of
        them, the whole row). Items left out provably score below
        :math:`v_b`, so the result is the full-precision top-:obj:`k` (up to
        float32 rounding and ties). The exact scores are taken in IEEE
        float32 whatever the float32 matmul precision is set to (TF32 or
        bfloat16 products would void the certificate); like torch's own
        setting, that holds process-wide while the decode runs.
        """
        if fold is None or fold.screen is None or fold.bound is None or \
                k + margin >= self.num_items:
            return self.decode(h).topk(k, dim=1).indices
        return screened_topk(h, k, self.lin2, fold.screen, fold.bound,
                             margin, max_candidates)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_items}, '
                f'hidden_channels={self.hidden_channels}, '
                f'time_channels={self.time_channels}, '
                f'dropout={self.dropout.p})')
