r"""Random draws that follow a generator's own stream on any device."""
from typing import Any, Callable, Optional

import torch
from torch import Tensor


def sample_on_generator(sample: Callable[..., Tensor], *args: Any,
                        generator: Optional[torch.Generator],
                        device: Optional[torch.device],
                        **kwargs: Any) -> Tensor:
    r"""``sample(*args, generator=generator, **kwargs)`` (e.g.
    :func:`torch.rand`) drawn on the device of :obj:`generator` (a CPU
    generator cannot draw on CUDA), or on :obj:`device` without one, then
    moved to :obj:`device` (left where drawn if it is :obj:`None`). The
    numbers are the generator's own stream, whatever :obj:`device` is."""
    gen_device = generator.device if generator is not None else device
    out = sample(*args, generator=generator, device=gen_device, **kwargs)
    return out.to(device) if device is not None else out
