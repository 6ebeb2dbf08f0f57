"""Real CUDA: numerics against the CPU, fp16 blocks, short training runs, resume, NCCL.

Marked `cuda` and skipped without a GPU (`pytest -m cuda tests/test_cuda.py`; benchmarks/gpu_check.sh
runs them). `CUDA_TESTS_DEVICE=cpu` runs the same code on the CPU, which checks the tests
themselves, not CUDA.
"""

import glob
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from networks.stylegan2 import Discriminator, Generator
from torch_utils import precision as precision_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICE = os.environ.get('CUDA_TESTS_DEVICE', 'cuda')
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE == 'cuda' and not torch.cuda.is_available(), reason='needs a CUDA GPU')]
TINY = ['--cbase=1024', '--cmax=64', '--map=2', '--batch=16', '--workers=0', '--tick=0.1', '--snap=1']


@pytest.fixture(autouse=True)
def tf32_off():
    """Every test here compares against fp32 on the CPU: TF32 off, as the training loop's default."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def networks(fp16=False, res=64):
    torch.manual_seed(0)
    fp16_kwargs = dict(num_fp16_res=4, conv_clamp=256) if fp16 else {}
    G = Generator(z_dim=64, c_dim=0, w_dim=64, img_resolution=res, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=4096, channel_max=128,
                                                                           **fp16_kwargs))
    D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=4096, channel_max=128, **fp16_kwargs)
    return G.eval().requires_grad_(False), D.eval().requires_grad_(False)


def on(module, device):
    import copy
    return copy.deepcopy(module).to(device)


def test_G_and_D_on_cuda_equal_the_cpu_in_fp32():
    G, D = networks()
    z = torch.from_numpy(np.random.RandomState(0).randn(8, G.z_dim).astype(np.float32))
    c = torch.zeros([8, 0])
    with torch.no_grad():
        img_cpu = G(z, c, noise_mode='const')
        img_dev = on(G, DEVICE)(z.to(DEVICE), c.to(DEVICE), noise_mode='const').cpu()
        logits_cpu = D(img_cpu, c)
        logits_dev = on(D, DEVICE)(img_cpu.to(DEVICE), c.to(DEVICE)).cpu()
    assert (img_dev - img_cpu).abs().max() < 1e-4
    assert (logits_dev - logits_cpu).abs().max() < 1e-4 * max(1.0, logits_cpu.abs().max().item())


def test_fp16_blocks_are_finite_and_close_to_fp32():
    G32, D32 = networks(fp16=False)
    G16, D16 = networks(fp16=True)                           # same seed: the same weights
    z = torch.randn(8, G32.z_dim, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    c = torch.zeros([8, 0], device=DEVICE)
    with torch.no_grad():
        ref = on(G32, DEVICE)(z, c, noise_mode='const')
        half = on(G16, DEVICE)(z, c, noise_mode='const')
        ref_logits = on(D32, DEVICE)(ref, c)
        half_logits = on(D16, DEVICE)(ref, c)
    assert half.dtype == torch.float32 and torch.isfinite(half).all() and torch.isfinite(half_logits).all()
    # fp16 keeps ~3 significant digits per layer; over a dozen layers the image moves by a few 1e-3.
    assert (half - ref).abs().mean() < 0.02 * ref.abs().mean()
    assert (half_logits - ref_logits).abs().max() < 0.05 * max(1.0, ref_logits.abs().max().item())


def test_tf32_switch_sets_both_backend_flags():
    precision_utils.set_tf32(True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    precision_utils.set_tf32(False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


# -- end to end through the command line ------------------------------------------------------------

def run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable] + args, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=kwargs.pop('timeout', 600), **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def snapshots(run_root, pattern='network-snapshot-*.pkl'):
    return sorted(glob.glob(os.path.join(str(run_root), '*', pattern)))


def final_stats(run_root):
    path = sorted(glob.glob(os.path.join(str(run_root), '*', 'stats.jsonl')))[-1]
    with open(path) as f:
        return [json.loads(line) for line in f][-1]


@pytest.fixture(scope='module')
def vae_pkl(tmp_path_factory):
    root = tmp_path_factory.mktemp('vae')
    run(['train.py', f'--outdir={root}', '--data=dsprites', '--cfg=betavae', '--code-dim=4', '--kimg=0.2',
         '--tick=0.1', '--snap=1', '--workers=0', f'--device={DEVICE}'])
    return snapshots(root, 'vae-snapshot-*.pkl')[-1]


@pytest.fixture(scope='module')
def idgan_root(tmp_path_factory, vae_pkl):
    root = tmp_path_factory.mktemp('idgan')
    run(['train.py', f'--outdir={root}', '--data=dsprites', '--cfg=idgan', f'--vae={vae_pkl}', '--kimg=0.2',
         f'--device={DEVICE}'] + TINY)
    return root


def check_run(root, expect_keys=()):
    last = snapshots(root)[-1]
    with open(last, 'rb') as f:
        snap = pickle.load(f)
    stats = final_stats(root)
    assert snap['resume_state']['cur_nimg'] >= 200
    assert np.isfinite(stats['Loss/G/loss']['mean']) and np.isfinite(stats['Loss/D/loss']['mean'])
    for key in expect_keys:
        assert key in stats, key
    G = snap['G_ema']
    assert all(torch.isfinite(p).all() for p in G.parameters())
    return snap


def test_a_200_image_stylegan2_run_trains_on_cuda(tmp_path):
    run(['train.py', f'--outdir={tmp_path}', '--data=dsprites', '--cfg=stylegan2', '--kimg=0.2',
         f'--device={DEVICE}'] + TINY)
    check_run(tmp_path)


def test_a_200_image_idgan_run_trains_on_cuda(idgan_root):
    snap = check_run(idgan_root, expect_keys=['Loss/IDGAN/distill'])
    assert snap['latent'].bank_mu.shape[1] == 4 and 'E' in snap


def test_a_200_image_infogan_cr_run_trains_on_cuda(tmp_path):
    run(['train.py', f'--outdir={tmp_path}', '--data=dsprites', '--cfg=infogan-cr', '--cont=3', '--kimg=0.2',
         '--cr-start-kimg=0.1', f'--device={DEVICE}'] + TINY)
    snap = check_run(tmp_path, expect_keys=['Loss/CR/G'])
    assert 'Q' in snap and 'H' in snap


def test_a_200_image_genes_run_trains_on_cuda(tmp_path):
    run(['train.py', f'--outdir={tmp_path}', '--data=dsprites', '--mapping=genes', '--genes=8', '--variants=5',
         '--kimg=0.2', f'--device={DEVICE}'] + TINY)
    snap = check_run(tmp_path)
    assert snap['latent'].layout()['kind'] == 'genes'


def test_select_model_ranks_idgan_snapshots_on_cuda(idgan_root, tmp_path):
    import shutil
    last = snapshots(idgan_root)[-1]
    shutil.copy(last, tmp_path / 'copy.pkl')                       # two models: the snapshot and its copy
    networks_arg = f'{last},{tmp_path / "copy.pkl"}'
    out = tmp_path / 'centrality.json'
    run(['select_model.py', f'--networks={networks_arg}', '--groups=8', '--group-size=4', '--std-samples=32',
         f'--out={out}', f'--device={DEVICE}', '--quiet'])
    with open(out) as f:
        data = json.load(f)
    scores = np.array(data['scores'])
    assert scores.shape == (2, 2) and np.all(scores == scores[0, 0])   # identical models score identically


def test_resume_on_cuda_continues_the_counter(idgan_root, vae_pkl, tmp_path):
    first = snapshots(idgan_root)[-1]
    with open(first, 'rb') as f:
        before = pickle.load(f)['resume_state']
    run(['train.py', f'--outdir={tmp_path}', '--data=dsprites', '--cfg=idgan', f'--vae={vae_pkl}', f'--resume={first}',
         '--kimg=0.4',
         f'--device={DEVICE}'] + TINY)
    with open(snapshots(tmp_path)[-1], 'rb') as f:
        after = pickle.load(f)
    assert after['resume_state']['cur_nimg'] >= 400 > before['cur_nimg']
    assert after['resume_state']['batch_idx'] > before['batch_idx']
    assert all(torch.isfinite(p).all() for p in after['G'].parameters())


def test_a_one_process_nccl_run_trains(tmp_path):
    if DEVICE != 'cuda':
        pytest.skip('NCCL needs CUDA')
    run(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', 'train.py', f'--outdir={tmp_path}',
         '--data=dsprites', '--kimg=0.2', '--device=cuda'] + TINY)
    check_run(tmp_path)


def test_statistics_reduce_over_an_nccl_group_without_a_per_report_sync(tmp_path):
    if DEVICE != 'cuda':
        pytest.skip('NCCL needs CUDA')
    script = (
        'import torch\n'
        'from torch_utils import training_stats\n'
        f"torch.distributed.init_process_group('nccl', init_method='file://{tmp_path}/init', rank=0, world_size=1)\n"
        "training_stats.init_multiprocessing(rank=0, sync_device=torch.device('cuda'))\n"
        "collector = training_stats.Collector(regex='.*')\n"
        "for step in range(10):\n"
        "    training_stats.report('Loss/x', torch.full([4], float(step), device='cuda'))\n"
        "collector.update()\n"
        "assert collector.num('Loss/x') == 40 and abs(collector.mean('Loss/x') - 4.5) < 1e-9\n"
        "torch.distributed.destroy_process_group()\n"
        "print('ok')\n")
    assert run(['-c', script]).strip().endswith('ok')
