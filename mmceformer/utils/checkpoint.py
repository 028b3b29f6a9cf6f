"""Safe loading of mmengine checkpoints on every supported torch.

A checkpoint is a pickle, and unpickling can run code. torch 2.6 made
``torch.load(..., weights_only=True)`` the default, which refuses anything
but tensors and plain data; mmengine 0.10.7 calls ``torch.load`` without the
argument, so on torch >= 2.6 its own Runner checkpoints fail to load
(resuming, ``load_from``, ``tools/test.py``), and on torch < 2.6 it unpickles
anything. :func:`allow_mmengine_checkpoints` (run on ``import mmceformer``,
which every entry point does) makes both safe and working:

* the few plain-data classes that a Runner checkpoint holds are allowed
  (:func:`safe_checkpoint_globals`), and mmengine's ``HistoryBuffer`` stops
  pickling function references (loadable only by allowing ``getattr``, i.e.
  anything);
* torch >= 2.6: they are added to torch's own weights-only allow-list;
* torch < 2.6: every load through mmengine's ``CheckpointLoader`` (which
  ``load_checkpoint``, ``Runner.resume``/``load_from`` and Pretrained
  ``init_cfg`` all use) goes through :data:`restricted_pickle`, an
  unpickler that resolves only torch's weights-only globals and those
  classes. A caller that passes ``weights_only`` or ``pickle_module`` to
  ``torch.load`` itself keeps its choice, as on torch >= 2.6.
"""
import collections
import contextlib
import functools
import pickle
import types

import numpy as np
import torch
from torch.torch_version import TorchVersion

#: whether ``torch.load`` is weights-only by default (torch >= 2.6)
TORCH_LOAD_IS_SAFE = TorchVersion(torch.__version__) >= '2.6'

# Builtins that pickle protocol 2 (torch.save's default) writes as globals
# for plain data: sets, complex numbers, slices and bytes.
_PLAIN_BUILTINS = ('builtins.set', 'builtins.frozenset', 'builtins.complex',
                   'builtins.slice', 'builtins.bytearray', '_codecs.encode')


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


@functools.lru_cache(maxsize=None)
def allowed_global_names() -> frozenset:
    """``module.name`` of every global that :data:`restricted_pickle`
    resolves: torch's own weights-only allow-list (tensor and storage
    rebuilding, ``OrderedDict``, dtypes, ...) plus
    :func:`safe_checkpoint_globals`. Cached: a frozenset of names that
    depends on the installed packages only, not on any call's context."""
    from torch import _weights_only_unpickler
    names = set(_weights_only_unpickler._get_allowed_globals())
    names.update(f'{obj.__module__}.{obj.__qualname__}'
                 for obj in safe_checkpoint_globals())
    names.update(_PLAIN_BUILTINS)
    return frozenset(names)


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle ``Unpickler`` that refuses every global outside
    :func:`allowed_global_names`, before importing anything."""

    def find_class(self, module, name):
        if f'{module}.{name}' not in allowed_global_names():
            raise pickle.UnpicklingError(
                f'Weights only load failed: {module}.{name} is not allowed '
                'in a checkpoint (mmceformer safe loading: tensors and plain '
                'data only). Load a file you trust with '
                'torch.load(..., weights_only=False).')
        return super().find_class(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


#: what ``torch.load(..., pickle_module=...)`` needs of a pickle module
restricted_pickle = types.SimpleNamespace(
    Unpickler=RestrictedUnpickler,
    UnpicklingError=pickle.UnpicklingError,
    load=_restricted_load,
    __name__='mmceformer_restricted_pickle')

@contextlib.contextmanager
def restricted_torch_load():
    """Within the block, ``torch.load`` without ``weights_only`` or
    ``pickle_module`` unpickles with :data:`restricted_pickle`."""
    original = torch.load

    def load(f, map_location=None, pickle_module=None, **kwargs):
        if pickle_module is None and kwargs.get('weights_only') is None:
            pickle_module, kwargs['weights_only'] = restricted_pickle, False
        return original(
            f, map_location=map_location, pickle_module=pickle_module,
            **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def _restrict_checkpoint_loader() -> None:
    """Route ``CheckpointLoader.load_checkpoint`` (every scheme: local
    files, URLs, object stores) through :func:`restricted_torch_load`."""
    from mmengine.runner.checkpoint import CheckpointLoader
    original = CheckpointLoader.load_checkpoint.__func__
    if getattr(original, '_mmceformer_restricted', False):
        return

    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        with restricted_torch_load():
            return original(cls, filename, map_location, logger)

    load_checkpoint._mmceformer_restricted = True
    load_checkpoint.__doc__ = original.__doc__
    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)


def allow_mmengine_checkpoints() -> None:
    """Make mmengine checkpoint loading safe and working on this torch (see
    the module docstring). Idempotent. Anything else in a checkpoint
    (arbitrary objects, functions, ``getattr``) is refused with an
    ``UnpicklingError`` before it is imported."""
    from mmengine.logging import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    if TORCH_LOAD_IS_SAFE:
        torch.serialization.add_safe_globals(safe_checkpoint_globals())
    else:
        _restrict_checkpoint_loader()
