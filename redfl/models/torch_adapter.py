"""PyTorch adapter: a module's ``state_dict`` as named numpy arrays and back.

Reading is zero-copy: on the CPU a contiguous tensor and its array share memory. Loading
copies each array once into the module's own storage (training then updates it in place),
and reads arrays straight from Ray's object store without an intermediate copy.

Needs the ``torch`` extra: ``pip install -e '.[torch]'`` (``torch==2.13.0``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch

from redfl.core.arrays import Parameters

__all__ = ["load_arrays", "to_arrays"]


def to_arrays(module: torch.nn.Module, copy: bool = False) -> Parameters:
    """The module's ``state_dict`` as ``{name: array}``.

    Parameters
    ----------
    module:
        Any module on the CPU (a tensor on another device is copied to the host).
    copy:
        ``False`` (default) returns views sharing memory with the module: cheap, but they
        change when the module trains again. ``True`` returns independent arrays.

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1)
    >>> arrays = to_arrays(layer)
    >>> sorted(arrays), arrays["weight"].shape
    (['bias', 'weight'], (1, 2))
    >>> np.shares_memory(arrays["weight"], layer.weight.detach().numpy())
    True
    """
    arrays: Parameters = {}
    for name, tensor in module.state_dict().items():
        host = tensor.detach().cpu().contiguous()
        array = host.numpy()
        arrays[name] = array.copy() if copy else array
    return arrays


def load_arrays(module: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into the module's tensors, in place (names and shapes must match).

    Read-only arrays (as Ray hands out from its object store) are read without a copy.

    Raises
    ------
    KeyError
        If a name is missing or unexpected, naming them.
    ValueError
        If an array's shape differs from its tensor's.

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1)
    >>> load_arrays(layer, {"weight": np.ones((1, 2), np.float32), "bias": np.zeros(1)})
    >>> layer.weight.tolist()
    [[1.0, 1.0]]
    """
    state = module.state_dict()
    if state.keys() != arrays.keys():
        missing = sorted(set(state) - set(arrays))
        extra = sorted(set(arrays) - set(state))
        raise KeyError(f"parameter names differ: missing {missing}, unexpected {extra}")
    with torch.no_grad(), warnings.catch_warnings():
        # torch warns that a read-only array gives a read-only tensor; it is only read here.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        for name, tensor in state.items():
            source = torch.from_numpy(np.asarray(arrays[name]))
            if source.shape != tensor.shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(source.shape)}, "
                    f"expected {tuple(tensor.shape)}"
                )
            tensor.copy_(source)
