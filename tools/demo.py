"""The built-in default job (`make demo`): toy COCO set -> train -> COCO
mAP -> pictures, on a laptop CPU.

    python tools/demo.py [--work-dir work_dirs/demo]
        [--data-root data/toy_coco]

1. writes the toy set (tools/make_toy_coco.py) if it is absent;
2. trains configs/toy/mask_rcnn_ceformer_toy.py with tools/train.py,
   resuming from the last checkpoint if a run was interrupted;
3. evaluates the last checkpoint with tools/test.py (COCO bbox and segm mAP,
   written to WORK_DIR/metrics.json);
4. draws predictions on validation images (WORK_DIR/vis/pred_*.png) and the
   tokens E-Attention keeps at each pruning block (WORK_DIR/vis/tokens.png,
   tools/analysis/visualize_tokens.py).
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'toy', 'mask_rcnn_ceformer_toy.py')


def data_options(data_root):
    root = data_root.rstrip('/') + '/'
    ann = root + 'annotations/instances_val.json'
    return [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
    ]


def ensure_data(data_root, num_train, num_val):
    ann = osp.join(data_root, 'annotations', 'instances_val.json')
    if osp.exists(ann):
        print(f'[demo] toy set found in {data_root}')
        return
    from mmceformer.datasets import make_toy_coco
    print(f'[demo] writing the toy set to {data_root} '
          f'({num_train} train / {num_val} val images)')
    make_toy_coco(data_root, num_train, num_val)


def train(work_dir, options):
    """tools/train.py with --resume: continues an interrupted run."""
    command = [
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), CONFIG, '--work-dir', work_dir,
        '--resume', '--cfg-options', *options
    ]
    print('[demo] ' + ' '.join(command[1:4]) + ' ...', flush=True)
    subprocess.run(command, check=True)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test(work_dir, checkpoint, options):
    """tools/test.py; returns its metrics (and prints its output)."""
    command = [
        sys.executable,
        osp.join(ROOT, 'tools', 'test.py'), CONFIG, checkpoint, '--work-dir',
        osp.join(work_dir, 'test'), '--cfg-options', *options
    ]
    print('[demo] ' + ' '.join(command[1:4]) + ' ...', flush=True)
    result = subprocess.run(
        command, check=True, stdout=subprocess.PIPE, text=True)
    print(result.stdout)
    metrics = {}
    for match in re.finditer(r'^(coco/\w+): ([-\d.]+)$', result.stdout,
                             re.MULTILINE):
        metrics[match.group(1)] = float(match.group(2))
    with open(osp.join(work_dir, 'metrics.json'), 'w') as f:
        json.dump(metrics, f, indent=1)
    return metrics


def draw_pictures(work_dir, checkpoint, data_root, num_images=4):
    """Predictions on the first validation images, and kept tokens."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    from mmengine.config import Config
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
    import visualize_tokens

    vis_dir = osp.join(work_dir, 'vis')
    os.makedirs(vis_dir, exist_ok=True)
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.pop('init_cfg', None)
    model = init_detector(cfg, checkpoint, device='cpu')
    visualizer = VISUALIZERS.build(
        dict(type='DetLocalVisualizer', name='demo'))
    visualizer.dataset_meta = model.dataset_meta
    image_dir = osp.join(data_root, 'val')
    names = sorted(os.listdir(image_dir))[:num_images]
    written = []
    for name in names:
        path = osp.join(image_dir, name)
        result = inference_detector(model, path)
        out_file = osp.join(vis_dir, 'pred_' + osp.splitext(name)[0] + '.png')
        visualizer.add_datasample(
            name,
            mmcv.imread(path, channel_order='rgb'),
            result,
            draw_gt=False,
            pred_score_thr=0.5,
            out_file=out_file)
        written.append(out_file)
    shown, panels = visualize_tokens.kept_tokens(CONFIG, checkpoint,
                                                 osp.join(image_dir, names[0]))
    written.append(
        visualize_tokens.draw(shown, panels, osp.join(vis_dir, 'tokens.png')))
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument(
        '--data-root', default=osp.join(ROOT, 'data', 'toy_coco'))
    parser.add_argument('--train-images', type=int, default=200)
    parser.add_argument('--val-images', type=int, default=50)
    parser.add_argument('--pictures', type=int, default=4)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides for train and test')
    args = parser.parse_args(argv)
    ensure_data(args.data_root, args.train_images, args.val_images)
    options = data_options(args.data_root) + args.cfg_options
    checkpoint = train(args.work_dir, options)
    metrics = test(args.work_dir, checkpoint, options)
    pictures = draw_pictures(args.work_dir, checkpoint, args.data_root,
                             args.pictures)
    print('[demo] done.')
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        print(f'[demo] {key}: {metrics.get(key)}')
    print('[demo] pictures: ' + ', '.join(pictures))
    return metrics, pictures


if __name__ == '__main__':
    main()
