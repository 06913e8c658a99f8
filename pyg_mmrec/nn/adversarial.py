r"""MMSSL's WGAN discriminators over preference rows and the gradient
penalty."""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Module, Parameter
from torch_geometric.nn import MLP

from pyg_mmrec.nn._random import sample_on_generator


def _score_mlp(widths: Tuple[int, ...], dropout: Tuple[float, ...],
               negative_slope: float) -> MLP:
    # PyG's MLP as MMSSL's discriminators use it: Linear -> LeakyReLU ->
    # BatchNorm -> dropout per hidden layer, then a plain Linear to one logit.
    if len(dropout) != len(widths) - 1:
        raise ValueError(f'need one dropout rate per hidden layer '
                         f'({len(widths) - 1}), got {len(dropout)}')
    return MLP([*widths, 1], act='leaky_relu',
               act_kwargs={'negative_slope': negative_slope},
               norm='batch_norm', act_first=True, plain_last=True,
               dropout=[*dropout, 0.0])


def _reset_score_mlp(mlp: MLP) -> None:
    # MMSSL's initialisation, not PyG's: Kaiming-normal weights for the
    # LeakyReLU that follows, zero biases.
    for lin in mlp.lins:
        torch.nn.init.kaiming_normal_(lin.weight, a=mlp.act.negative_slope,
                                      nonlinearity='leaky_relu')
        torch.nn.init.zeros_(lin.bias)
    for norm in mlp.norms:
        norm.reset_parameters()


class Discriminator(Module):
    r"""MMSSL's discriminator over user preference rows
    :math:`\mathbf{r} \in \mathbb{R}^{I}`:

    .. math::
        D(\mathbf{r}) = 100 \cdot \sigma\big(\mathbf{W}_3\,
        \phi_2(\mathbf{W}_2\, \phi_1(\mathbf{W}_1 \mathbf{r} + \mathbf{b}_1)
        + \mathbf{b}_2) + \mathbf{b}_3\big)

    with widths :math:`I \to \lfloor I/4 \rfloor \to \lfloor I/8 \rfloor \to
    1` and :math:`\phi_l` = LeakyReLU, BatchNorm, dropout (0.31, then 0.5).
    Kaiming-normal weights, zero biases. It has :math:`O(I^2)` parameters;
    :class:`ProjectedDiscriminator` is the scalable variant with the same
    interface.

    Args:
        num_items (int): Row length :math:`I`.
        dropout (Tuple[float, float]): Dropout after each hidden layer.
        negative_slope (float): LeakyReLU slope (default: :obj:`0.2`).
        scale (float): Output scale (default: :obj:`100`).

    Shapes:
        - **input:** preference rows :math:`(B, I)`
        - **output:** scores :math:`(B, 1)` in :math:`(0, s)`, :math:`s`
          = :obj:`scale`
    """
    def __init__(self, num_items: int,
                 dropout: Tuple[float, float] = (0.31, 0.5),
                 negative_slope: float = 0.2, scale: float = 100.0) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f'num_items must be >= 1, got {num_items}')
        self.num_items = num_items
        self.scale = scale
        widths = (num_items, max(num_items // 4, 1), max(num_items // 8, 1))
        self.mlp = _score_mlp(widths, tuple(dropout), negative_slope)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        _reset_score_mlp(self.mlp)

    def forward(self, rows: Tensor) -> Tensor:
        r"""
        Args:
            rows (Tensor): ``[B, I]`` preference rows.

        Returns:
            ``[B, 1]`` scores in :math:`(0, s)`, :math:`s` = :obj:`scale`
            (100 by default).
        """
        return self.scale * torch.sigmoid(self.mlp(rows))

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.num_items})'


class ProjectedDiscriminator(Module):
    r"""A discriminator with :math:`O(I \cdot d)` parameters and the same
    interface and output convention as :class:`Discriminator`: each row is
    first projected onto item embeddings :math:`\mathbf{E} \in
    \mathbb{R}^{I \times d}`, then scored by a small MLP,

    .. math::
        D(\mathbf{r}) = 100 \cdot \sigma\big(\mathrm{MLP}(\mathbf{r}
        \mathbf{E})\big),

    MLP widths :math:`d \to` :obj:`hidden_channels` :math:`\to`
    :obj:`hidden_channels` / 2 :math:`\to 1` with LeakyReLU, BatchNorm and
    dropout as in :class:`Discriminator`.

    The projection is learnable (a parameter, Xavier-uniform) unless a fixed
    :obj:`projection` is given; a fixed one is a buffer that
    :meth:`set_projection` replaces (e.g. with the detached item embeddings
    of the recommender every epoch).

    Args:
        num_items (int): Row length :math:`I`.
        channels (int): Projection size :math:`d` (default: :obj:`64`).
        hidden_channels (int): First hidden width (default: :obj:`64`).
        projection (Tensor, optional): A fixed ``[I, d]`` projection.
        dropout (Tuple[float, float]): Dropout after each hidden layer.
        negative_slope (float): LeakyReLU slope (default: :obj:`0.2`).
        scale (float): Output scale (default: :obj:`100`).

    Shapes:
        - **input:** preference rows :math:`(B, I)` (or, to :meth:`score`,
          rows already projected, :math:`(B, d)`)
        - **output:** scores :math:`(B, 1)` in :math:`(0, s)`, :math:`s`
          = :obj:`scale`
    """
    def __init__(self, num_items: int, channels: int = 64,
                 hidden_channels: int = 64,
                 projection: Optional[Tensor] = None,
                 dropout: Tuple[float, float] = (0.31, 0.5),
                 negative_slope: float = 0.2, scale: float = 100.0) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f'num_items must be >= 1, got {num_items}')
        self.num_items = num_items
        self.channels = channels
        self.learnable = projection is None
        if projection is None:
            self.projection = Parameter(torch.empty(num_items, channels))
        else:
            self._check(projection)
            self.register_buffer('projection', projection.detach().clone())
        self.scale = scale
        widths = (channels, hidden_channels, max(hidden_channels // 2, 1))
        self.mlp = _score_mlp(widths, tuple(dropout), negative_slope)
        self.reset_parameters()

    def _check(self, projection: Tensor) -> None:
        if tuple(projection.shape) != (self.num_items, self.channels):
            raise ValueError(f'projection must be [{self.num_items}, '
                             f'{self.channels}], got '
                             f'{list(projection.shape)}')

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        if self.learnable:
            torch.nn.init.xavier_uniform_(self.projection)
        _reset_score_mlp(self.mlp)

    @torch.no_grad()
    def set_projection(self, projection: Tensor) -> None:
        r"""Replaces a fixed projection (detached)."""
        if self.learnable:
            raise RuntimeError('the projection is learnable; construct the '
                               'discriminator with `projection=` to fix it')
        self._check(projection)
        self.projection.copy_(projection.detach())

    def forward(self, rows: Tensor) -> Tensor:
        r"""
        Args:
            rows (Tensor): ``[B, I]`` preference rows.

        Returns:
            ``[B, 1]`` scores in :math:`(0, s)`, :math:`s` = :obj:`scale`
            (100 by default).
        """
        return self.score(rows.matmul(self.projection))

    def score(self, projected: Tensor) -> Tensor:
        r"""The scores of rows given already projected,
        :math:`\mathbf{r}\mathbf{E}` (``[B, d]``), e.g. by
        :func:`~pyg_mmrec.transforms.projected_preference_rows` for rows
        that are never formed; :obj:`forward` is
        ``score(rows @ projection)``."""
        return self.scale * torch.sigmoid(self.mlp(projected))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_items}, '
                f'channels={self.channels}, learnable={self.learnable})')


def _mixing_weights(real: Tensor, fake: Tensor,
                    generator: Optional[torch.Generator],
                    alpha: Optional[Tensor]) -> Tensor:
    # The gradient penalty's per-row alpha, [B, 1], drawn unless given.
    if real.shape != fake.shape:
        raise ValueError(f'real and fake must have the same shape, got '
                         f'{tuple(real.shape)} and {tuple(fake.shape)}')
    if alpha is None:
        alpha = sample_on_generator(torch.rand, real.size(0), 1,
                                    generator=generator, device=real.device,
                                    dtype=real.dtype)
    return alpha.to(real.device, real.dtype).view(-1, 1)


def gradient_penalty(discriminator: Module, real: Tensor, fake: Tensor,
                     weight: float = 0.3,
                     generator: Optional[torch.Generator] = None,
                     alpha: Optional[Tensor] = None) -> Tensor:
    r"""The WGAN-GP penalty

    .. math::
        \lambda \cdot \frac{1}{B} \sum_b \big(\lVert \nabla_{\hat{\mathbf{r}}}
        D(\hat{\mathbf{r}})_b \rVert_2 - 1\big)^2, \qquad
        \hat{\mathbf{r}}_b = \alpha_b \mathbf{r}_b + (1 - \alpha_b)
        \mathbf{f}_b, \quad \alpha_b \sim \mathcal{U}(0, 1)

    (:math:`\lambda` = :obj:`weight`, 0.3 in MMSSL). The gradient graph is
    kept (``create_graph``) so that the penalty trains the discriminator.

    Args:
        discriminator (Module): :math:`D`, ``[B, I] -> [B, 1]``.
        real (Tensor): ``[B, I]`` real rows.
        fake (Tensor): ``[B, I]`` generated rows.
        weight (float): :math:`\lambda`.
        generator (torch.Generator, optional): For drawing :math:`\alpha`.
        alpha (Tensor, optional): ``[B]`` or ``[B, 1]`` fixed mixing weights.
    """
    alpha = _mixing_weights(real, fake, generator, alpha)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach())
    mixed.requires_grad_(True)
    score = discriminator(mixed)
    grad, = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return weight * (grad.norm(p=2, dim=1) - 1).pow(2).mean()


def projected_gradient_penalty(discriminator: ProjectedDiscriminator,
                               real: Tensor, fake: Tensor,
                               weight: float = 0.3,
                               generator: Optional[torch.Generator] = None,
                               alpha: Optional[Tensor] = None) -> Tensor:
    r""":func:`gradient_penalty` of a :class:`ProjectedDiscriminator` from
    the projected rows :math:`\mathbf{r}\mathbf{E}`,
    :math:`\mathbf{f}\mathbf{E}` (``[B, d]``) instead of the rows.

    The discriminator sees a row only through :math:`\mathbf{z} =
    \mathbf{r}\mathbf{E}`, so the mixed row projects to the same mix of
    the projections and :math:`\nabla_{\mathbf{r}} D = \mathbf{E}\,
    \nabla_{\mathbf{z}} D`, whose norm is :math:`\sqrt{\mathbf{g}^\top
    \mathbf{E}^\top\mathbf{E}\,\mathbf{g}}` with :math:`\mathbf{g} =
    \nabla_{\mathbf{z}} D`: :math:`O(B d^2)` instead of :math:`O(B I d)`.
    Equal to :func:`gradient_penalty` on the rows (same :obj:`alpha`),
    including its gradient in the projection when :obj:`real` and
    :obj:`fake` are differentiable in it.
    """
    alpha = _mixing_weights(real, fake, generator, alpha)
    mixed = alpha * real + (1 - alpha) * fake
    if not mixed.requires_grad:
        mixed.requires_grad_(True)
    score = discriminator.score(mixed)
    grad, = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    projection = discriminator.projection
    sq = (grad.matmul(projection.t().matmul(projection)) * grad).sum(-1)
    # sqrt's gradient at 0 is infinite; a zero gradient norm gives penalty
    # `weight` either way.
    norm = sq.clamp_min(1e-24).sqrt()
    return weight * (norm - 1).pow(2).mean()
