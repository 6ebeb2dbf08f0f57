"""Over a hundred bad inputs across the six command-line tools (docs/ERRORS.md).

Each must end with exit status != 0, exactly one line on stderr (`Error: ...` with the expected
words), no traceback, and the files around it exactly as they were: nothing written, nothing lost.
"""

import builtins
import errno
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import calc_metrics
import dataset_tool
import export
import generate
import select_model
import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--cbase=256', '--cmax=16', '--map=1', '--workers=0', '--precision=fp32', '--aug=noaug', '--tick=0.004']


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """Inputs to get wrong: a tiny GAN run, a VAE snapshot, images, and broken or foreign files."""
    t = tmp_path_factory.mktemp('world')
    rng = np.random.RandomState(0)
    (t / 'img').mkdir()
    for i in range(16):
        PIL.Image.fromarray(rng.randint(0, 256, [32, 32], dtype=np.uint8), 'L').save(t / 'img' / f'{i:02d}.png')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for args in (['--batch=4', '--kimg=0.008', '--snap=1'],
                 ['--cfg=betavae', '--code-dim=3', '--batch=8', '--kimg=0.008', '--snap=1']):
        done = subprocess.run([sys.executable, 'train.py', f'--outdir={t / "runs"}', f'--data={t / "img"}', *TINY, *args],
                              cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    runs = sorted(os.listdir(t / 'runs'))
    gan_dir, vae_dir = t / 'runs' / runs[0], t / 'runs' / runs[1]
    shutil.copy(gan_dir / 'network-snapshot-000000.pkl', t / 'S.pkl')
    shutil.copy(sorted(p for p in os.listdir(vae_dir) if p.startswith('vae-snapshot-'))[-1] and
                vae_dir / sorted(p for p in os.listdir(vae_dir) if p.startswith('vae-snapshot-'))[-1], t / 'V.pkl')
    raw = (t / 'S.pkl').read_bytes()
    (t / 'trunc.pkl').write_bytes(raw[:len(raw) // 2])
    (t / 'list.pkl').write_bytes(pickle.dumps([1, 2, 3]))
    (t / 'nonet.pkl').write_bytes(pickle.dumps({'training_set_kwargs': {'path': 'x'}, 'note': 'no networks'}))
    (t / 'afile').write_text('x')
    (t / 'fake.zip').write_text('this is not a zip archive')
    (t / 'notimage.png').write_text('not an image')
    (t / 'emptydir').mkdir()
    (t / 'full').mkdir()
    (t / 'full' / 'keep.txt').write_text('keep')
    (t / 'exists.pt').write_bytes(b'already here')
    (t / 'ro').mkdir()
    return dict(t=t, R=gan_dir, VR=vae_dir)


@pytest.fixture
def read_only(world, monkeypatch):
    """{t}/ro behaves as a read-only file system: creating or writing anything under it fails (EROFS).

    (The tests may run as root, to whom file modes are no obstacle, and mounting needs privileges.)
    """
    ro = str(world['t'] / 'ro')

    def blocked(path):
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(ro)
        except TypeError:
            return False

    def refuse(path):
        raise OSError(errno.EROFS, 'Read-only file system', os.fsdecode(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, mode='r', *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in 'wax+') and blocked(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and blocked(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if blocked(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, 'open', fake_open)
    monkeypatch.setattr(os, 'open', fake_os_open)
    monkeypatch.setattr(os, 'mkdir', fake_mkdir)


NON_FINITE_TRAIN = ['kimg', 'tick', 'gamma', 'glr', 'dlr', 'beta', 'lr', 'distill-weight', 'distill-warmup',
                    'info-weight-cat', 'info-weight-cont', 'cr-weight', 'cr-start-kimg']

T = train.main
G = generate.main
E = export.main
M = calc_metrics.main
D = dataset_tool.main
SEL = select_model.main

CASES = []
for _name in NON_FINITE_TRAIN:  # nan passes any range check and inf passes x > 0
    for _value in ('nan', 'inf'):
        CASES.append((T, [f'--{_name}={_value}'], 'is not a finite number'))
CASES += [(T, ['--kimg=-inf'], "Invalid value for '--kimg'"), (T, ['--target=nan'], 'is not a finite number'),
          (T, ['--target=inf'], "Invalid value for '--target'"), (T, ['--aug=fixed', '--p=nan'], 'is not a finite number')]
CASES += [
    # train.py
    (T, ['--kimg=0'], '0.0 is not in the range x>0'),
    (T, ['--gpus=3', '--batch=8'], '--batch=8 must be divisible by --gpus=3.'),
    (T, ['--batch=8', '--batch-gpu=3'], '--batch=8 must be a multiple of --gpus x --batch-gpu'),
    (T, ['--resume={t}/missing.pkl'], 'does not exist; give a network-snapshot-*.pkl'),
    (T, ['--resume={t}/emptydir'], 'is a directory without a complete network-snapshot'),
    (T, ['--resume={t}/trunc.pkl'], 'is truncated or not a pickle'),
    (T, ['--resume={t}/V.pkl'], 'is not a network snapshot (no G_ema inside)'),
    (T, ['--resume={t}/list.pkl'], 'is not a network snapshot (it holds a list'),
    (T, ['--resume={t}/nonet.pkl'], 'is not a network snapshot (no G_ema inside)'),
    (T, ['--resume={t}/S.pkl', '--cbase=512'], 'does not fit these options: G_ema.synthesis'),
    (T, ['--resume={t}/S.pkl', '--cmax=8'], 'does not fit these options'),
    (T, ['--resume={t}/S.pkl', '--map=2'], 'does not fit these options: G_ema.mapping'),
    (T, ['--resume={R}', '--batch=8'], 'was trained with other options (batch_size 4 -> 8'),
    (T, ['--resume={R}', '--batch=4', '--gamma=3'], 'loss_kwargs.r1_gamma'),
    (T, ['--resume={R}', '--batch=4', '--seed=5'], 'random_seed 0 -> 5'),
    (T, ['--resume={R}', '--batch=4', '--aug=ada'], 'was trained with other options'),
    (T, ['--resume={R}', '--batch=4', '--kimg=0.004'], 'has already trained 0.008 kimg and --kimg=0.004 asks for no more'),
    (T, ['--resume={R}', '--batch=4', '--kimg=0.008'], 'has already trained 0.008 kimg'),
    (T, ['--resume={t}/S.pkl', '--kimg=0.002'], 'has already trained 0.004 kimg'),
    (T, ['--data={t}/missing.zip'], 'does not exist; pass a folder or .zip of images'),
    (T, ['--data={t}/fake.zip'], 'is named .zip but is not a zip archive'),
    (T, ['--data={t}/afile'], 'is neither a folder nor a .zip file'),
    (T, ['--cfg=nonsense'], 'unknown --cfg=nonsense'),
    (T, ['--device=tpu'], '--device=tpu is not a torch device name'),
    (T, ['--metrics=bogus'], 'unknown metric(s) bogus'),
    (T, ['--metric-options={{"num_train":5}}'], '--metric-options was given without any metric'),
    (T, ['--metrics=mig', '--metric-options={{"num_gen":5}}'], 'apply to none of the chosen metrics'),
    (T, ['--aug=fixed'], '--aug=fixed needs --p'),
    (T, ['--p=0.5'], '--p can only be given with --aug=fixed.'),
    (T, ['--aug=noaug', '--p=0.5'], '--p can only be given with --aug=fixed.'),
    (T, ['--beta=4'], '--beta applies to the VAE configs'),
    (T, ['--lr=0.001'], '--lr applies to the VAE configs'),
    (T, ['--recon=gaussian'], '--recon applies to the VAE configs'),
    (T, ['--outdir={t}/afile'], 'is a file; give a directory'),
    (T, ['--outdir={t}/ro/runs'], 'cannot create the run directory'),
    (T, ['--cond=1'], '--cond=1 needs labels'),
    (T, ['--cfg=idgan'], '--cfg=idgan needs --vae='),
    (T, ['--cfg=idgan', '--vae={t}/missing.pkl'], 'missing.pkl does not exist'),
    (T, ['--cfg=idgan', '--vae={t}/trunc.pkl'], 'is truncated or not a pickle'),
    (T, ['--cfg=idgan', '--vae={t}/S.pkl'], 'is a GAN snapshot, not a VAE snapshot'),
    (T, ['--vae={t}/V.pkl'], '--vae does not apply to --cfg=stylegan2'),
    (T, ['--cat=10'], '--cat does not apply to --cfg=stylegan2'),
    (T, ['--mapping=nonsense'], 'unknown --mapping=nonsense'),
    (T, ['--genes=8'], '--genes does not apply to --mapping=mlp'),
    (T, ['--kimg=abc'], "Invalid value for '--kimg'"),
    (T, ['--batch=0'], "Invalid value for '--batch'"),
    (T, ['--snap=0'], "Invalid value for '--snap'"),
    (T, ['--target=1.5'], "Invalid value for '--target'"),
    (T, ['--bogus-option=1'], "No such option '--bogus-option'"),
    (T, ['--cfg=betavae', '--gamma=3'], '--gamma'),
    (T, ['--cfg=betavae', '--resume={VR}', '--batch=16', '--code-dim=3'], 'was trained with other options (batch_size 8 -> 16'),
    (T, ['--cfg=betavae', '--resume={VR}', '--batch=8', '--code-dim=3', '--kimg=0.004'], 'has already trained 0.008 kimg'),
    # generate.py
    (G, ['--network={t}/S.pkl', '--trunc=nan'], "Invalid value for '--trunc': nan is not a finite number."),
    (G, ['--network={t}/S.pkl', '--trunc=inf'], 'is not a finite number'),
    (G, ['--network={t}/S.pkl', '--trunc=-inf'], 'is not a finite number'),
    (G, ['--network={t}/S.pkl', '--set', '2=nan'], 'the value must be a finite number'),
    (G, ['--network={t}/S.pkl', '--set', '2=inf'], 'the value must be a finite number'),
    (G, ['--network={t}/S.pkl', '--set', '99=1.5'], 'has no code (a plain StyleGAN2 z)'),
    (G, ['--network={t}/S.pkl', '--set', 'x=1'], "is not DIM=VALUE"),
    (G, ['--network={t}/S.pkl', '--seeds=abc'], '"abc" is not a number or a range'),
    (G, ['--network={t}/S.pkl', '--seeds=5-2'], 'ends before it starts'),
    (G, ['--network={t}/missing.pkl'], 'missing.pkl does not exist.'),
    (G, ['--network={t}/trunc.pkl'], 'is truncated or not a pickle'),
    (G, ['--network={t}/list.pkl'], 'is not a network snapshot (it holds a list'),
    (G, ['--network={t}/V.pkl'], 'holds no generator'),
    (G, ['--network={t}/nonet.pkl'], 'holds no generator'),
    (G, ['--network={t}/afile.pt'], 'does not exist'),
    (G, ['--network={t}/S.pkl', '--outdir={t}/afile'], 'is a file; give a directory'),
    (G, ['--network={t}/S.pkl', '--outdir={t}/ro/out'], 'cannot create --outdir='),
    (G, ['--network={t}/S.pkl', '--device=tpu'], '--device=tpu is not a torch device name'),
    (G, ['--network={t}/S.pkl', '--encode={t}/img/00.png'], '--encode needs an ID-GAN snapshot'),
    (G, ['--network={t}/S.pkl', '--class=3'], None),  # only a warning: not a case (filtered below)
    (G, ['--network={t}/S.pkl', '--traverse', '--dims=600'], 'dimension 600 does not exist'),
    (G, ['--network={t}/S.pkl', '--traverse', '--dims=abc'], 'is not a number or a range'),
    (G, ['--network={t}/S.pkl', '--steps=1', '--traverse'], "Invalid value for '--steps'"),
    (G, ['--network={t}/S.pkl', '--genes=1,2,3'], 'genes'),
    (G, ['--network={t}/S.pkl', '--swap-gene', '0=1'], 'genes'),
    (G, ['--network={t}/S.pkl', '--compare-vae'], 'VAE'),
    (G, ['--network={t}/S.pkl', '--condition-temp=nan'], 'is not a finite number'),
    (G, ['--network={t}/S.pkl', '--condition-temp=0'], "Invalid value for '--condition-temp'"),
    (G, ['--network={t}/S.pkl', '--noise-mode=loud'], "Invalid value for '--noise-mode'"),
    (G, ['--network={t}/S.pkl', '--precision=fp8'], "Invalid value for '--precision'"),
    # export.py
    (E, ['--network={t}/nonet.pkl', '--dest={t}/x.pt'], 'holds no networks'),
    (E, ['--network={t}/list.pkl', '--dest={t}/x.pt'], 'is not a network snapshot (it holds a list'),
    (E, ['--network={t}/missing.pkl', '--dest={t}/x.pt'], 'does not exist'),
    (E, ['--network={t}/trunc.pkl', '--dest={t}/x.pt'], 'is truncated or not a pickle'),
    (E, ['--network={t}/S.pkl', '--dest={t}/x.pkl'], 'must end in .pt'),
    (E, ['--network={t}/S.pkl', '--dest={t}/exists.pt'], 'exists; pass --force'),
    (E, ['--network={t}/S.pkl', '--dest={t}/nofolder/x.pt'], 'the folder of --dest'),
    (E, ['--network={t}/exists.pt', '--dest={t}/x.pt'], 'is already an export'),
    (E, ['--network={t}/S.pkl', '--dest={t}/ro/x.pt'], 'Read-only file system'),
    # calc_metrics.py
    (M, ['--network={t}/V.pkl', '--metrics=bogus'], 'unknown metric(s) bogus'),
    (M, ['--network={t}/V.pkl', '--metrics=,'], '--metrics is empty'),
    (M, ['--network={t}/V.pkl', '--options=notjson'], '--options is not valid JSON'),
    (M, ['--network={t}/V.pkl', '--options={{"bogus":1}}'], 'apply to none of the chosen metrics'),
    (M, ['--network={t}/V.pkl', '--metrics=mig', '--data=shapes3d'], 'was trained on 1-channel images but --data=shapes3d'),
    (M, ['--network={t}/S.pkl', '--metrics=mig', '--data=shapes3d'], 'was trained on 1-channel images'),
    (M, ['--network={t}/missing.pkl', '--metrics=mig'], 'does not exist'),
    (M, ['--network={t}/list.pkl', '--metrics=mig'], 'is not a network snapshot'),
    (M, ['--network={t}/trunc.pkl', '--metrics=mig'], 'is truncated or not a pickle'),
    (M, ['--network={t}/V.pkl', '--metrics=mig', '--device=tpu'], '--device=tpu is not a torch device name'),
    (M, ['--network={t}/V.pkl', '--metrics=mig', '--run-dir={t}/afile'], 'is a file; give a directory'),
    (M, ['--network={t}/V.pkl', '--metrics=mig', '--run-dir={t}/ro/m'], 'cannot create --run-dir='),
    (M, ['--network={t}/V.pkl', '--metrics=mig', '--data={t}/missing'], 'does not exist'),
    (M, ['--network={t}/V.pkl', '--metrics=mig', '--data={t}/fake.zip'], 'is not a zip archive'),
    (M, ['--network={t}/V.pkl', '--metrics=mig', '--seed=abc'], "Invalid value for '--seed'"),
    # dataset_tool.py
    (D, ['--source={t}/missing', '--dest={t}/o.zip'], 'does not exist'),
    (D, ['--source={t}/emptydir', '--dest={t}/o.zip'], 'is empty'),
    (D, ['--source={t}/img', '--dest={t}/o.zip', '--resolution=33'], 'must be a power of two'),
    (D, ['--source={t}/img', '--dest={t}/afile'], 'exists and is a file'),
    (D, ['--source={t}/img', '--dest={t}/full'], 'already exists and is not empty'),
    (D, ['--source={t}/img', '--dest={t}/emptydir.zip'], None),  # not a mistake (filtered below)
    (D, ['--source={t}/afile', '--dest={t}/o.zip'], 'is a file but not a .zip archive'),
    (D, ['--source={t}/fake.zip', '--dest={t}/o.zip'], 'is not a readable zip file'),
    (D, ['--source={t}/img', '--dest={t}/ro/o.zip'], 'cannot write --dest='),
    (D, ['--source={t}/img', '--dest={t}/ro/folder'], 'cannot write --dest='),
    (D, ['--source={t}/img', '--dest={t}/o.zip', '--transform=bogus'], "Invalid value for '--transform'"),
    # select_model.py
    (SEL, ['--networks={t}/nothing*.pkl'], 'matches no file'),
    (SEL, ['--networks={t}/missing.pkl'], 'does not exist'),
]
CASES = [case for case in CASES if case[2] is not None]


def tree(root):
    """Every file and folder under root with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def test_there_are_over_a_hundred_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize('command, args, message', CASES,
                         ids=[f'{c.name}-{i}' for i, (c, _, _) in enumerate(CASES)])
def test_bad_input_is_one_sentence_and_writes_nothing(command, args, message, world, read_only):
    t = world['t']
    args = [a.format(t=t, R=world['R'], VR=world['VR']) for a in args]
    if command is T:
        if not any(a.startswith('--data') for a in args):
            args.append(f'--data={t / "img"}')
        if not any(a.startswith('--outdir') for a in args):
            args.append(f'--outdir={t / "runs"}')
        args = TINY + (['--batch=4'] if not any(a.startswith('--batch') for a in args) else []) + args
    if command is G and not any(a.startswith('--outdir') for a in args):
        args.append(f'--outdir={t / "out"}')
    before = tree(t)
    result = CliRunner().invoke(command, args)
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a ClickException, not a crash
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.stderr
    assert message in lines[0], lines[0]
    assert 'Traceback' not in result.output
    assert tree(t) == before  # nothing written, nothing lost, no directory left behind
