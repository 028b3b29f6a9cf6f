import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    with open(osp.join(HERE, 'mmceformer', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(name):
    """Requirement lines of requirements/<name>.txt, comments dropped."""
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


setup(
    name='mmceformer',
    version=read_version(),
    description='E-Attention and CEFormer: efficient vision transformer '
    'backbones for mmpretrain and mmdet',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.8',
    # mmcv is left out on purpose, as mmdet and mmpretrain do: it must be
    # built with its compiled ops (see tools/setup_env.sh).
    # torch >= 2.1: F.scaled_dot_product_attention(scale=...); 2.1 is the
    # oldest torch with OpenMMLab's prebuilt mmcv 2.1.0 wheels, tested in
    # CI (make test-compat).
    install_requires=['torch>=2.1'] + [
        r for r in read_requirements('runtime.txt')
        if not r.startswith('mmcv')
    ],
    extras_require={
        'tests': read_requirements('tests.txt'),
        'deploy': read_requirements('deploy.txt'),
    },
    license='Apache License 2.0',
    zip_safe=False,
)
