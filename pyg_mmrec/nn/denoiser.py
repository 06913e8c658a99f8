r"""DiffMM's denoiser network :math:`g_m(\mathbf{x}_t, t)`."""
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Dropout, Linear, Module


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


def _init_linear(lin: Linear) -> None:
    fan_out, fan_in = lin.weight.shape
    std = math.sqrt(2.0 / (fan_in + fan_out))
    torch.nn.init.normal_(lin.weight, 0.0, std)
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
        r"""The projected time embedding :math:`\mathbf{e}_t`, ``[B, 10]``."""
        return self.time_lin(timestep_embedding(t, self.time_channels))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        r"""
        Args:
            x (Tensor): ``[B, I]`` noisy rows :math:`\mathbf{x}_t`.
            t (Tensor): ``[B]`` integer time steps.

        Returns:
            ``[B, I]`` predicted clean rows :math:`\hat{\mathbf{x}}_0`.
        """
        emb = self.time_embedding(t).to(x.dtype)
        h = torch.tanh(self.lin1(torch.cat([self.dropout(x), emb], dim=-1)))
        return self.lin2(h)

    @torch.no_grad()
    def reverse_hidden(self, x0: Tensor, coef1: Sequence[float],
                       coef2: Sequence[float]) -> Tensor:
        r"""Runs the deterministic reverse process of
        :class:`~pyg_mmrec.nn.GaussianDiffusion` in the hidden space and
        returns the hidden state :math:`\mathbf{h}^{(0)}` of the last step
        (so that :math:`\hat{\mathbf{x}}_0^{(0)} = \mathbf{h}^{(0)}
        \mathbf{W}_2 + \mathbf{b}_2`). Dropout is not applied (inference).

        Because every reverse step is the affine posterior mean
        :math:`\mathbf{x}_{t-1} = c^1_t \hat{\mathbf{x}}_0^{(t)} + c^2_t
        \mathbf{x}_t` and :math:`g` starts with a linear map, the first
        layer's pre-activation :math:`\mathbf{z}_t = \mathbf{x}_t
        \mathbf{W}_1^{x}` obeys

        .. math::
            \mathbf{z}_{t-1} = c^1_t \big(\mathbf{h}^{(t)} \mathbf{W}_2
            \mathbf{W}_1^{x} + \mathbf{b}_2 \mathbf{W}_1^{x}\big)
            + c^2_t \mathbf{z}_t,

        an ``H x H`` product per step instead of two ``H x I`` products; it
        is the same function up to floating-point reassociation.

        Args:
            x0 (Tensor): ``[B, I]`` start rows :math:`\mathbf{x}_T`, dense or
                a sparse CSR tensor.
            coef1 (Sequence[float]): :math:`c^1_t` for ``t = 0..T-1``.
            coef2 (Sequence[float]): :math:`c^2_t` for ``t = 0..T-1``.

        Returns:
            ``[B, H]`` hidden state of the step ``t = 0``.
        """
        num_steps = len(coef1)
        w1 = self.lin1.weight  # [H, I + C]
        w1_x = w1[:, :self.num_items]
        w1_t = w1[:, self.num_items:]
        # The last layer folded into the next step's first layer: [H, H].
        w2_w1 = self.lin2.weight.t().matmul(w1_x.t())
        b2_w1 = self.lin2.bias.matmul(w1_x.t())
        steps = torch.arange(num_steps, device=w1.device)
        # Time part of the first layer for every step, with the bias: [T, H].
        time_part = F.linear(self.time_embedding(steps), w1_t, self.lin1.bias)

        if x0.layout == torch.sparse_csr:
            # Rows are sparse: sum the first-layer columns of their items.
            crow, col = x0.crow_indices(), x0.col_indices()
            z = F.embedding_bag(col, w1_x.t().contiguous(), crow[:-1],
                                mode='sum', per_sample_weights=x0.values(),
                                include_last_offset=False)
        else:
            z = x0.matmul(w1_x.t())
        h = z
        for t in range(num_steps - 1, -1, -1):
            h = torch.tanh(z + time_part[t])
            if t > 0:
                z = coef2[t] * z
                z.addmm_(h, w2_w1, alpha=coef1[t])
                z.add_(b2_w1, alpha=coef1[t])
        return h

    def decode(self, h: Tensor) -> Tensor:
        r"""The output layer, :math:`\mathbf{h} \mathbf{W}_2 +
        \mathbf{b}_2`."""
        return self.lin2(h)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_items}, '
                f'hidden_channels={self.hidden_channels}, '
                f'time_channels={self.time_channels}, '
                f'dropout={self.dropout.p})')
