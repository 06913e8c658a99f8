r"""Transforms writing normalised and generated graphs onto the
:class:`~torch_geometric.data.HeteroData` (composable with
:class:`torch_geometric.transforms.Compose`)."""
from pyg_mmrec.transforms.normalize import OneSidedNorm, SymmetricNorm
from pyg_mmrec.transforms.diffusion_graph import (
    DiffusionGraph,
    default_screen_dtype,
    diffusion_topk_edges,
    interaction_rows,
    native_bf16,
)
from pyg_mmrec.transforms.adversarial import (
    AdversarialGraph,
    gumbel_sharpen,
    num_generated_items,
    preference_rows,
    preference_topk_edges,
    projected_preference_rows,
    projected_real_rows,
    sparse_sharpening_is_exact,
)

__all__ = [
    'SymmetricNorm', 'OneSidedNorm', 'DiffusionGraph', 'diffusion_topk_edges',
    'interaction_rows', 'default_screen_dtype', 'native_bf16',
    'AdversarialGraph', 'preference_rows', 'gumbel_sharpen',
    'preference_topk_edges', 'num_generated_items',
    'projected_preference_rows', 'projected_real_rows',
    'sparse_sharpening_is_exact'
]
