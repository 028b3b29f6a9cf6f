"""The README's demo: E-Attention at work on a built-in toy image.

    make demo          # or: .venv/bin/python tools/demo.py [--size 448]

No weights are downloaded (none can be here): the models are randomly
initialised, so this shows what the code does (token counts per block,
output shapes, parameters, measured CPU latency against softmax in the same
run), not accuracy.
"""
import argparse
import statistics
import time

import numpy as np
import torch

import mmceformer  # noqa: F401  (registers the models)
from mmceformer.models import CEFormer, EViT


def toy_image(size: int, seed: int = 0) -> torch.Tensor:
    """A textured background with a few coloured discs and squares:
    (1, 3, size, size), normalised roughly like ImageNet inputs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    image = np.stack(
        [0.4 + 0.1 * np.sin(20 * xx + c) * np.cos(14 * yy) for c in range(3)])
    for _ in range(6):
        cx, cy, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), \
            rng.uniform(0.05, 0.15)
        colour = rng.uniform(0, 1, size=3)[:, None]
        if rng.random() < 0.5:
            inside = (xx - cx)**2 + (yy - cy)**2 < r**2
        else:
            inside = (abs(xx - cx) < r) & (abs(yy - cy) < r)
        image[:, inside] = colour
    image = (image - 0.45) / 0.25
    return torch.from_numpy(image).float()[None]


def latency_ms(model, x, repeats=5):
    with torch.no_grad():
        model(x)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--size',
        type=int,
        default=448,
        help='image side, divisible by 16 (default 448)')
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = toy_image(args.size)
    tokens = (args.size // 16)**2
    print(f'toy image {tuple(x.shape)}: {tokens} image tokens + CLS; '
          f'random weights, CPU threads={torch.get_num_threads()}\n')

    models = {
        f'DeiT-S {mode}':
        EViT(arch='deit-small', img_size=args.size, attn_mode=mode)
        for mode in ('softmax', 'linear', 'prune', 'eattn')
    }
    models['CEFormer-S (eattn)'] = CEFormer(arch='s', img_size=args.size)
    base = None
    print('| model | params (M) | image tokens after each block | '
          'output | CPU ms | vs DeiT-S softmax |')
    print('|---|---|---|---|---|---|')
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            out = model(x)[0]
        counts = ' '.join(str(int(c[0])) for c in model.token_counts)
        ms = latency_ms(model, x, args.repeats)
        base = base or ms
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f'| {name} | {params:.1f} | {counts} | {tuple(out.shape)} | '
              f'{ms:.0f} | {base / ms:.2f}x faster |')


if __name__ == '__main__':
    main()
