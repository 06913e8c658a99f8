r"""The README's Python example runs as printed and computes what its text
says: one propagation step on the symmetric normalised adjacency ``A`` of
MODELS.md."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / 'README.md'


def test_readme_composition_example():
    blocks = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)
    assert len(blocks) == 1, 'update this test with the README'
    namespace: dict = {}
    exec(compile(blocks[0], str(README), 'exec'), namespace)
    U, I, store = namespace['U'], namespace['I'], namespace['store']

    # A = D^{-1/2} ([[0, R], [R^T, 0]] + Id) D^{-1/2}, from the training edges.
    user, item = store.edge_index
    a_bar = torch.eye(U + I)
    a_bar[user, U + item] = 1.0
    a_bar[U + item, user] = 1.0
    d = a_bar.sum(1).rsqrt()
    a = d[:, None] * a_bar * d[None, :]

    ids = namespace['ids'].detach()
    with torch.no_grad():
        step = namespace['conv'](ids, namespace['adj'])
    torch.testing.assert_close(step, a @ ids)
    assert namespace['out'].shape == (U + I, 64)
