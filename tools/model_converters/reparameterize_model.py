"""Convert a checkpoint to the deploy form of its backbone.

    python tools/model_converters/reparameterize_model.py CONFIG CKPT OUT

Builds the config's model, loads CKPT, calls ``backbone.switch_to_deploy()``
(CEFormer: C2/C3 depthwise branches merged into one kernel, the stem's
BatchNorm folded; exact in eval mode) and saves the state dict to OUT. To
use it, set ``model.backbone.deploy=True`` in the config (e.g.
``--cfg-options model.backbone.deploy=True``) and load OUT as usual.
"""
import argparse

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

import mmceformer  # noqa: F401
from mmceformer.utils.complexity import build_model


def convert(config, checkpoint, out):
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    model, _ = build_model(cfg)
    load_checkpoint(model, checkpoint, map_location='cpu')
    if not hasattr(model.backbone, 'switch_to_deploy'):
        raise ValueError(f'{type(model.backbone).__name__} has no deploy '
                         'form (switch_to_deploy)')
    model.backbone.switch_to_deploy()
    torch.save({'state_dict': model.state_dict()}, out)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    args = parser.parse_args(argv)
    convert(args.config, args.checkpoint, args.out)
    print(f'saved the deploy form to {args.out}; use it with '
          'model.backbone.deploy=True')


if __name__ == '__main__':
    main()
