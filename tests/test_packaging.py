"""The package as a user installs it: ``python -m build`` makes an sdist and
a wheel (built from the sdist, so the sdist is complete), the wheel installs
into a fresh virtual environment and brings its configs; the metadata
declares ranges, not this project's pins."""
import os
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _project_files():
    """Tracked and untracked-but-not-ignored files: what a clone holds."""
    out = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    """sdist and wheel of a copy of the project (the checkout stays clean)."""
    tmp = tmp_path_factory.mktemp('build')
    src = tmp / 'src'
    for name in _project_files():
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
        os.chmod(target, (ROOT / name).stat().st_mode)
    subprocess.run(
        [sys.executable, '-m', 'build', '--no-isolation', '--outdir',
         str(tmp / 'dist'),
         str(src)],
        check=True,
        capture_output=True)
    sdist, = (tmp / 'dist').glob('mmceformer-*.tar.gz')
    wheel, = (tmp / 'dist').glob('mmceformer-*.whl')
    return sdist, wheel


def test_sdist_holds_what_setup_py_and_users_need(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split('/', 1)[1] for n in tar.getnames() if '/' in n}
    for needed in ('setup.py', 'LICENSE', 'CITATION.cff', 'README.md',
                   'model-index.yml', 'requirements/runtime.txt',
                   'requirements/mminstall.txt', 'requirements/tests.txt',
                   'requirements/deploy.txt',
                   'configs/mask_rcnn_ceformer_s_coco.py',
                   'configs/metafiles/ceformer.yml'):
        assert needed in names, needed


def test_wheel_ships_configs_tools_and_model_index(dists):
    _, wheel = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = sorted(p.relative_to(ROOT).as_posix()
                     for p in (ROOT / 'configs').rglob('*')
                     if p.is_file() and '__pycache__' not in p.parts)
    missing = [c for c in configs if f'mmceformer/.mim/{c}' not in names]
    assert not missing, missing
    assert 'mmceformer/.mim/model-index.yml' in names
    assert 'mmceformer/.mim/tools/train.py' in names
    assert not any(n.startswith(('tests/', 'configs/')) for n in names)


def test_wheel_metadata_declares_ranges_not_pins(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as zf:
        meta, = [n for n in zf.namelist() if n.endswith('/METADATA')]
        requires = [
            line.split(':', 1)[1].strip()
            for line in zf.read(meta).decode().splitlines()
            if line.startswith('Requires-Dist:')
        ]
    base = [r for r in requires if 'extra ==' not in r]
    assert any(r.startswith('mmpretrain') for r in base)
    assert not any('==' in r for r in base), base
    assert any(r.startswith('mmcv') and 'extra == "mim"' in r
               for r in requires), requires


def test_wheel_installs_into_a_fresh_venv_and_builds_from_shipped_configs(
        dists, tmp_path):
    """A new virtual environment that sees this one's packages (torch, the
    cached mmcv, mmdet, mmpretrain) but not the checkout: the wheel's
    mmceformer imports, finds its configs inside the package, a config of
    the user's inherits one with ``mmceformer::`` and builds its model."""
    _, wheel = dists
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    site = subprocess.run(
        [str(python), '-c', 'import sysconfig; '
         'print(sysconfig.get_paths()["purelib"])'],
        check=True,
        capture_output=True,
        text=True).stdout.strip()
    Path(site, 'base_env.pth').write_text(sysconfig.get_paths()['purelib'] +
                                          '\n')
    subprocess.run([
        str(python), '-m', 'pip', 'install', '--no-deps', '--no-index', '-q',
        str(wheel)
    ],
                   check=True)
    user = tmp_path / 'user'
    user.mkdir()
    (user / 'my_cls.py').write_text(
        "_base_ = ['mmceformer::cls_ceformer_s_in1k.py']\n"
        "model = dict(backbone=dict(keep_ratio=0.5))\n")
    script = textwrap.dedent(f"""
        import os, sys
        import mmceformer
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import MODELS
        import torch
        assert mmceformer.__file__.startswith({str(venv)!r}), \
            mmceformer.__file__
        mim = os.path.join(os.path.dirname(mmceformer.__file__), '.mim')
        assert os.path.isfile(os.path.join(mim, 'configs',
                                           'mask_rcnn_ceformer_s_coco.py'))
        cfg = Config.fromfile('my_cls.py')
        assert cfg.model.backbone.keep_ratio == 0.5
        cfg.model.backbone.update(  # small enough for a test
            arch=dict(embed_dims=32, depth=2, num_heads=2, stem_channels=8),
            img_size=64)
        cfg.model.head.in_channels = 32
        init_default_scope('mmpretrain')
        model = MODELS.build(cfg.model)
        out = model(torch.randn(1, 3, 64, 64), mode='tensor')
        print('ok', type(model.backbone).__name__, tuple(out.shape))
        """)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([str(python), '-c', script],
                            cwd=user,
                            env=env,
                            capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'ok CEFormer (1, 1000)' in result.stdout
