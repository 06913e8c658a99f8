import pytest
import torch

from pyg_mmrec.data.synthetic import SyntheticConfig, make_synthetic
from pyg_mmrec.train.registry import MODELS


@pytest.mark.parametrize('name', sorted(MODELS))
def test_loss_gradients_repeat_bit_for_bit(name):
    # A batch that repeats a few users and items many times: CPU kernels
    # that accumulate repeated rows with atomic adds (the backward of
    # x[index]) give different roundings from call to call, so the same
    # seed would not reproduce a training run.
    data = make_synthetic(SyntheticConfig(num_users=300, num_items=200,
                                          seed=3))
    spec = MODELS[name]
    torch.manual_seed(0)
    model = spec.build(data, spec.config_cls(), 0)
    data = model.prepare(data)
    model.train()
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(0, 4, (4096, ), generator=gen)
    pos = torch.randint(0, 4, (4096, ), generator=gen)
    neg = torch.randint(4, 8, (4096, ), generator=gen)

    def grads():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # dropout, if any, draws the same masks
        loss, _ = model.loss(data, users, pos, neg)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()
                if p.grad is not None}

    first = grads()
    assert first
    for _ in range(5):
        again = grads()
        for key, value in first.items():
            assert torch.equal(again[key], value), key
