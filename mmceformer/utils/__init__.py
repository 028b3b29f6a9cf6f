from .checkpoint import allow_mmengine_checkpoints
from .configs import register_config_package, shipped_config

__all__ = [
    'allow_mmengine_checkpoints', 'register_config_package', 'shipped_config'
]
