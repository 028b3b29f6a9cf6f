"""Safe loading of mmengine checkpoints on torch >= 2.6.

torch 2.6 made ``torch.load(..., weights_only=True)`` the default, and
mmengine 0.10.7 calls ``torch.load`` without the argument, so resuming,
``load_from`` and ``tools/test.py`` on a Runner checkpoint fail. Instead of
turning safe loading off (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which lets
a crafted checkpoint run code), this module allow-lists the few plain-data
classes that a Runner checkpoint holds, and makes mmengine's
``HistoryBuffer`` stop pickling function references (which could only be
loaded by allowing ``getattr``, i.e. anything).

:func:`allow_mmengine_checkpoints` runs on ``import mmceformer``, which every
entry point (our tools, ``custom_imports`` in our configs) does.
"""
import collections

import numpy as np
import torch


def _numpy_globals():
    multiarray = np.core.multiarray
    dtype_classes = [
        cls for cls in vars(np.dtypes).values()
        if isinstance(cls, type) and issubclass(cls, np.dtype)
    ] if hasattr(np, 'dtypes') else []
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype
            ] + dtype_classes


def _history_buffer_getstate(self):
    """Plain data only: the statistics methods are class attributes that
    are registered again on import, so nothing is lost."""
    state = dict(self.__dict__)
    state.pop('statistics_methods', None)
    return state


def safe_checkpoint_globals():
    """Classes that mmengine Runner checkpoints contain besides tensors:
    log history buffers (numpy arrays and scalars) and the ``Counter`` of
    step schedulers' milestones."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, collections.Counter] + _numpy_globals()


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`safe_checkpoint_globals` for ``torch.load`` with
    ``weights_only=True`` and make new checkpoints free of pickled
    functions. Idempotent. Anything else in a checkpoint (arbitrary objects,
    functions, ``getattr``) is still refused by torch with an
    ``UnpicklingError``."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(safe_checkpoint_globals())
