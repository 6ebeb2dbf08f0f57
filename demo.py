"""The end-to-end demo behind `make demo`: ID-GAN on the built-in dSprites, sized for a 2-core CPU.

1. render samples of the built-in ground-truth datasets (nothing is downloaded);
2. stage 1: a beta-VAE (10 codes, beta = 8) learns a disentangled code;
3. its disentanglement scores (FactorVAE, MIG, SAP with reduced sample sizes);
4. stage 2: ID-GAN, a StyleGAN2 fed with the VAE's code and distilled with its frozen encoder;
5. latent traversals of the ID-GAN generator, one row per code dimension;
6. the VAE decoder beside the ID-GAN generator for the same codes (samples and one traversal).
Every stage is an ordinary command of the project, printed before it runs.
"""

import glob
import json
import os
import subprocess
import sys
import time

import click
import numpy as np


def _run(cmd):
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _newest(pattern):
    found = sorted(glob.glob(pattern))
    if not found:
        raise click.ClickException(f'expected output {pattern} was not written')
    return found[-1]


def render_dataset_samples(outdir):
    from training.procedural import get_builtin
    from training.training_loop import save_image_grid
    for name in ('dsprites', 'shapes3d', 'digits'):
        source = get_builtin(name)
        index = np.random.RandomState(0).randint(0, source.num_images, size=64)
        path = os.path.join(outdir, f'{name}_samples.png')
        save_image_grid(source.images(index), path, drange=[0, 255], grid_size=(8, 8))
        print(f'{name}: {source.num_images} images of {source.resolution}x{source.resolution}x'
              f'{source.num_channels} -> {path}')


@click.command()
@click.option('--outdir', default='demo-out', show_default=True, help='Where everything is written')
@click.option('--vae-kimg', default=20.0, show_default=True, help='Length of the VAE run')
@click.option('--gan-kimg', default=10.0, show_default=True, help='Length of the ID-GAN run')
def main(outdir, vae_kimg, gan_kimg):
    """Run the demo: datasets -> beta-VAE -> metrics -> ID-GAN -> traversals."""
    start = time.time()
    os.makedirs(outdir, exist_ok=True)
    runs = os.path.join(outdir, 'runs')
    py = sys.executable

    print('== 1. Built-in ground-truth datasets (rendered procedurally)')
    render_dataset_samples(outdir)

    print(f'\n== 2. Stage 1: a beta-VAE on dSprites for {vae_kimg:g} kimg')
    _run([py, 'train.py', f'--outdir={runs}', '--data=dsprites', '--cfg=betavae', '--beta=8', '--code-dim=10',
          f'--kimg={vae_kimg}', '--tick=4', '--snap=100', '--workers=0'])
    vae_pkl = _newest(os.path.join(runs, '*-dsprites-betavae-*', 'vae-snapshot-*.pkl'))

    print('\n== 3. Disentanglement of the VAE code (reduced sample sizes; see docs/METRICS.md for the full ones)')
    metrics_dir = os.path.join(outdir, 'metrics')
    _run([py, 'calc_metrics.py', f'--network={vae_pkl}', '--metrics=factorvae,mig,sap', '--data=dsprites',
          f'--run-dir={metrics_dir}', '--quiet',
          '--options=' + json.dumps(dict(num_train=2000, num_eval=1000, num_test=1000, num_variance_estimate=2000))])

    print(f'\n== 4. Stage 2: ID-GAN on dSprites for {gan_kimg:g} kimg, code from the VAE')
    _run([py, 'train.py', f'--outdir={runs}', '--data=dsprites', '--cfg=idgan', f'--vae={vae_pkl}',
          '--cbase=2048', '--cmax=32', '--map=2', '--batch=8', f'--kimg={gan_kimg}', '--tick=1', '--snap=100',
          '--distill-weight=0.1', '--workers=0'])
    gan_pkl = _newest(os.path.join(runs, '*-dsprites-idgan-*', 'network-snapshot-*.pkl'))

    print('\n== 5. Traversals of the ID-GAN generator (rows: code dimensions, columns: values)')
    traversal_dir = os.path.join(outdir, 'traversals')
    _run([py, 'generate.py', f'--network={gan_pkl}', '--traverse', '--seeds=0-3', f'--outdir={traversal_dir}'])
    _run([py, 'generate.py', f'--network={gan_pkl}', '--seeds=0-15', f'--outdir={os.path.join(outdir, "samples")}'])
    print('\n== 6. The VAE decoder beside the ID-GAN generator, same codes')
    compare_dir = os.path.join(outdir, 'compare')
    _run([py, 'generate.py', f'--network={gan_pkl}', '--compare-vae', '--traverse', '--seeds=0', '--steps=7',
          f'--outdir={compare_dir}'])
    _run([py, 'generate.py', f'--network={gan_pkl}', '--compare-vae', '--seeds=0-11', f'--outdir={compare_dir}'])

    print(f'\nDemo finished in {time.time() - start:.0f} s. Outputs in {outdir}/:')
    print(f'  dataset samples:  {outdir}/*_samples.png')
    print(f'  VAE run:          {os.path.dirname(vae_pkl)} (recon*.png, traversal*.png, stats.jsonl)')
    print(f'  VAE metrics:      {metrics_dir}/metric-*.jsonl')
    print(f'  ID-GAN run:       {os.path.dirname(gan_pkl)} (fakes*.png, stats.jsonl, snapshots)')
    print(f'  traversals:       {traversal_dir}/')
    print(f'  ID-GAN samples:   {outdir}/samples/seed*.png')
    print(f'  VAE vs ID-GAN:    {compare_dir}/compare-vae.png, traverse-seed0000(-vae).png')


if __name__ == '__main__':
    main()
