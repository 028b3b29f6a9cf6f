"""One short check of mmceformer on a machine with an NVIDIA GPU.

    tools/gpu_check.sh                  # = python tools/gpu_check.py
    python tools/gpu_check.py --device cpu --quick    # the same, tiny, CPU

1. Kernels on the device: ``linear_attention`` and the fused
   ``e_attention`` equal their O(N^2) references / composed parts (fp32,
   every position weighting, masks, pruned queries); bf16 and fp16
   autocast stay finite at N=16384.
2. One AMP (fp16 autocast, as mmdet's ``--amp``) training step of Mask
   R-CNN with each backbone x attention mode (tiny backbones): finite
   losses, every trainable parameter gets a gradient.
3. Speed: ``tools/benchmark_attention.py`` on the device, and DeiT-S with
   E-Attention / CEFormer-S against mmpretrain's DeiT-S (backbones, eval,
   bf16 autocast) at 800x1344, as latency ratios from one interleaved run.
4. Whole detectors as ``tools/analysis/benchmark_detector.py`` times them
   (their test pipelines on a 1333x800 image, batch 1, fp32, random
   weights): the Deformable DETR rows of thesis table 3-6 and Mask R-CNN
   CEFormer-S against mmdet's own Swin-T and ResNet-50 Mask R-CNN, images/s
   and ratios in one interleaved run (the GPU column of docs/tables.md).

Prints what it measured and exits non-zero if a check fails. Nothing in the
project depends on it having run.
"""
import argparse
import os
import sys
import time

import torch
from mmengine.config import Config

import mmceformer  # noqa: F401
from mmceformer.ops import (cls_attention_scores, e_attention,
                            linear_attention, linear_attention_reference,
                            sample_tokens)
from mmceformer.testing import BACKBONE_VARIANTS
from mmceformer.testing import TINY_BACKBONES as TINY
from mmceformer.utils.complexity import interleaved_latency

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools'))
sys.path.insert(0, os.path.join(ROOT, 'tools', 'analysis'))


def check(name, ok, detail=''):
    print(f"  [{'ok' if ok else 'FAIL'}] {name} {detail}")
    return bool(ok)


def kernel_checks(device, long_n):
    print('1. kernels on', device)
    gen = torch.Generator().manual_seed(0)
    results = []
    batch, heads, num, dim = 2, 3, 65, 16

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    q, k, v = (rand(batch, heads, num, dim) for _ in range(3))
    mask = torch.ones(batch, num, dtype=torch.bool, device=device)
    mask[1, -7:] = False
    for pos_weight, grid in ((None, None), ('1d', None), ('2d', (8, 8))):
        for key_mask in (None, mask):
            kwargs = dict(
                pos_weight=pos_weight, grid_size=grid, key_mask=key_mask)
            fast = linear_attention(q, k, v, **kwargs)
            ref = linear_attention_reference(q, k, v, **kwargs)
            err = float((fast - ref).abs().max())
            results.append(
                check(f'linear == reference pos_weight={pos_weight} '
                      f'mask={key_mask is not None}', err < 1e-4,
                      f'max abs diff {err:.1e}'))
    num_samples = 40
    out, index, kept = e_attention(q, k, v, num_samples)
    scores = cls_attention_scores(q[:, :, 0], k)
    image, image_mask = sample_tokens(scores, num_samples)
    composed = linear_attention(
        q.gather(2, index[:, None, :, None].expand(-1, heads, -1, dim)),
        k,
        v,
        q_pos=index)
    err = float(((out - composed).abs() * kept[:, None, :, None]).max())
    # e_attention's index counts the CLS token; sample_tokens' does not
    same_tokens = torch.equal(index[:, 1:][kept[:, 1:]] - 1,
                              image[image_mask])
    results.append(
        check('e_attention == scores + sampling + linear',
              err < 1e-4 and same_tokens,
              f'max abs diff {err:.1e}, same tokens {same_tokens}'))
    for dtype in (torch.bfloat16, torch.float16):
        big = [torch.randn(1, 2, long_n, 16, generator=gen).to(device) * 10
               for _ in range(3)]
        with torch.autocast(device.type, dtype=dtype):
            out = linear_attention(*(t.to(dtype) for t in big))
        results.append(
            check(f'{dtype} autocast finite at N={long_n}',
                  torch.isfinite(out).all()))
    return all(results)


def amp_training_steps(device):
    print('2. AMP (fp16 on CUDA) Mask R-CNN training step, backbone x mode')
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    base = Config.fromfile(
        os.path.join(ROOT, 'configs', 'toy', 'mask_rcnn_ceformer_toy.py'))
    results = []
    for name, mode, extra in BACKBONE_VARIANTS:
        cfg = base.model.copy()
        backbone = dict(type=name, attn_mode=mode, **TINY[name], **extra)
        if name == 'EAttentionSwin':
            backbone.update(out_indices=(0, 1, 2, 3))
            channels = [16, 32, 64, 128]
        else:
            backbone.update(out_type='pyramid', prune_mode='skip')
            channels = [12, 24, 48, 48]
        cfg.backbone = backbone
        cfg.neck.in_channels = channels
        torch.manual_seed(0)
        model = MODELS.build(cfg).to(device)
        model.init_weights()
        model.train()
        packed = demo_mm_inputs(
            2, [(3, 128, 160), (3, 128, 128)],
            num_items=[3, 2],
            num_classes=3,
            with_mask=True)
        data = model.data_preprocessor(packed, True)
        # fp16 autocast, as mmdet's --amp (AmpOptimWrapper) on GPUs; the
        # CPU smoke run stays fp32 (mmcv's CPU NMS takes float only).
        with torch.autocast(
                device.type,
                dtype=torch.float16,
                enabled=device.type == 'cuda'):
            losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
        unused = [
            n for n, p in model.named_parameters()
            if p.requires_grad and p.grad is None
        ]
        results.append(
            check(' '.join([name, mode] +
                           [f'{k}={v}' for k, v in extra.items()]),
                  torch.isfinite(loss) and not unused,
                  f'loss {float(loss):.3f}' +
                  (f' unused {unused[:3]}' if unused else '')))
    return all(results)


def speed(device, shape, repeats, lengths):
    print('3. speed on', device, f'(bf16 autocast, {shape[0]}x{shape[1]})')
    import benchmark_attention
    benchmark_attention.main([
        '--device', device.type, '--repeats',
        str(repeats), '--lengths', *map(str, lengths)
    ])
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    models = {
        'DeiT-S (mmpretrain)':
        dict(type='VisionTransformer', arch='deit-small', img_size=224),
        'DeiT-S E-Attention':
        dict(
            type='EAttentionViT',
            arch='deit-small',
            img_size=224,
            attn_mode='eattn',
            prune_mode='skip',
            out_type='featmap'),
        'CEFormer-S':
        dict(
            type='CEFormer',
            arch='s',
            attn_mode='eattn',
            prune_mode='skip',
            out_type='featmap'),
    }
    inputs = torch.randn(1, 3, *shape, device=device)
    fns = []
    for cfg in models.values():
        model = MODELS.build(cfg).to(device)
        model.eval()  # (mmpretrain's backbones' train() returns None)

        def fn(model=model):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return model(inputs)

        fns.append(fn)
    seconds = interleaved_latency(fns, 2, repeats, device)
    print('| backbone | ms | speed-up vs DeiT-S |\n|---|---|---|')
    for name, sec in zip(models, seconds):
        print(f'| {name} | {1e3 * sec:.1f} | {seconds[0] / sec:.2f}x |')
    return True


#: (name, config) of the whole-detector speed check: table 3-6's DeiT-S and
#: Swin-T rows, and table 4-7's CEFormer-S against mmdet's own detectors.
DETECTORS = (
    ('Deformable DETR DeiT-S softmax',
     'configs/deformable_detr_deit_s_softmax_coco.py'),
    ('Deformable DETR DeiT-S E-Attention',
     'configs/deformable_detr_deit_s_eattn_coco.py'),
    ('Deformable DETR Swin-T softmax',
     'configs/deformable_detr_swin_t_softmax_coco.py'),
    ('Deformable DETR Swin-T E-Attention',
     'configs/deformable_detr_swin_t_eattn_coco.py'),
    ('Mask R-CNN Swin-T (mmdet)',
     'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'),
    ('Mask R-CNN R-50 (mmdet)',
     'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'),
    ('Mask R-CNN CEFormer-S', 'configs/mask_rcnn_ceformer_s_coco.py'),
)


def detector_speed(device, quick):
    """Images/s of whole detectors, interleaved; with ``quick`` a 400x240
    image resized to 427x256 (a smoke run of the same code; Swin's 7x7
    windows need 224 pixels at least)."""
    print('4. whole detectors on', device)
    from benchmark_detector import benchmark, synthetic_image, table

    from mmceformer.utils import shipped_config
    configs = []
    for _, path in DETECTORS:
        if path.startswith('mmdet::'):
            import mmdet
            path = os.path.join(
                os.path.dirname(mmdet.__file__), '.mim', 'configs',
                path[len('mmdet::'):])
        else:
            path = shipped_config(path[len('configs/'):])
        cfg = Config.fromfile(path)
        if quick:
            for step in cfg.test_dataloader.dataset.pipeline:
                if step['type'] == 'Resize':
                    step['scale'] = (448, 256)
        configs.append(cfg)
    image = synthetic_image(400, 240) if quick else synthetic_image(1333, 800)
    results = benchmark(
        configs,
        image,
        repeats=1 if quick else 10,
        warmup=0 if quick else 2,
        device=device.type)
    print(table([name for name, _ in DETECTORS], results))
    return check('every detector ran', all(r['fps'] > 0 for r in results))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='small sizes (a smoke run, e.g. on the CPU)')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('no CUDA device: run with --device cpu --quick')
    start = time.time()
    print('# torch', torch.__version__, 'device', device,
          torch.cuda.get_device_name(device) if device.type == 'cuda' else '')
    ok = kernel_checks(device, 2048 if args.quick else 16384)
    ok &= amp_training_steps(device)
    if args.quick:
        ok &= speed(device, (64, 96), 1, [197])
    else:
        ok &= speed(device, (800, 1344), 10, [197, 1024, 4096, 16384])
    ok &= detector_speed(device, args.quick)
    print(f'# {"all checks passed" if ok else "FAILED"} in '
          f'{time.time() - start:.0f} s')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
