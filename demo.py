"""The end-to-end demo behind `make demo`, sized for a 2-core CPU.

Stages (each prints what it does and where the output is):
1. render samples of the built-in ground-truth datasets (dSprites, 3D Shapes, digits);
2. train a CPU-sized StyleGAN2 on dSprites for a short run (tick lines, grids, snapshot);
3. generate images from the final snapshot in a fresh process.
The disentanglement stages (VAE -> ID-GAN -> traversals and metrics) join this script as
they land; until then the demo says so at the end.
"""

import os
import subprocess
import sys
import time

import click
import numpy as np


def _run(cmd):
    print('$ ' + ' '.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def render_dataset_samples(outdir):
    from training.procedural import get_builtin
    from training.training_loop import save_image_grid
    for name in ('dsprites', 'shapes3d', 'digits'):
        source = get_builtin(name)
        rnd = np.random.RandomState(0)
        index = rnd.randint(0, source.num_images, size=64)
        images = source.images(index)
        path = os.path.join(outdir, f'{name}_samples.png')
        save_image_grid(images, path, drange=[0, 255], grid_size=(8, 8))
        print(f'{name}: {source.num_images} images of {source.resolution}x{source.resolution}x'
              f'{source.num_channels} -> {path}')


@click.command()
@click.option('--outdir', default='demo-out', show_default=True, help='Where everything is written')
@click.option('--kimg', default=2.0, show_default=True, help='Length of the StyleGAN2 run')
def main(outdir, kimg):
    """Run the demo: datasets -> StyleGAN2 on dSprites -> generated images."""
    start = time.time()
    os.makedirs(outdir, exist_ok=True)
    print('== 1. Built-in ground-truth datasets (rendered procedurally, nothing downloaded)')
    render_dataset_samples(outdir)

    print(f'\n== 2. A CPU-sized StyleGAN2 on dSprites for {kimg} kimg')
    runs = os.path.join(outdir, 'runs')
    _run([sys.executable, 'train.py', f'--outdir={runs}', '--data=dsprites', '--cfg=stylegan2',
          '--cbase=4096', '--cmax=128', '--map=2', '--batch=8', f'--kimg={kimg}', '--tick=0.5',
          '--snap=1000', '--workers=0'])
    from training.training_loop import list_snapshots
    run_dirs = sorted(os.path.join(runs, d) for d in os.listdir(runs))
    snapshot = list_snapshots(run_dirs[-1])[-1]

    print('\n== 3. Images from the final snapshot')
    _run([sys.executable, 'generate.py', f'--network={snapshot}', '--seeds=0-7',
          f'--outdir={os.path.join(outdir, "generated")}'])

    print(f'\nDemo finished in {time.time() - start:.0f} s. Outputs in {outdir}/:')
    print(f'  dataset samples: {outdir}/*_samples.png')
    print(f'  training run:    {run_dirs[-1]} (log.txt, stats.jsonl, fakes*.png, snapshots)')
    print(f'  generated:       {outdir}/generated/seed*.png')
    print('Not in the demo yet: the VAE stage, ID-GAN, traversals and disentanglement metrics '
          '(see docs/ROADMAP.md).')


if __name__ == '__main__':
    main()
