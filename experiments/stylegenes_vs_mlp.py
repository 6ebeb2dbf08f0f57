"""StyleGenes' gene bank against StyleGAN2's mapping MLP on dSprites or 3D Shapes, at equal length and seed. Seed 0.

    OMP_NUM_THREADS=1 python experiments/stylegenes_vs_mlp.py --kimg=8                  # dSprites
    OMP_NUM_THREADS=1 python experiments/stylegenes_vs_mlp.py --kimg=8 --data=shapes3d  # 3D Shapes look-alike

Claim tested (Ntavelis et al., WACV 2024): a discrete bank of learnable gene variants can replace the
Gaussian z and the mapping MLP at about the same fidelity, with far fewer mapping parameters, and a
latent whose parts (the genes) each own a slice of w.

Stages, each an ordinary command of the project, printed before it runs:

1. StyleGAN2 with the 2-layer mapping MLP, CPU widths (`train.py --data=<data> --cbase=2048 --cmax=32
   --map=2 --batch=8`), `--kimg` long (or reuse a snapshot with `--mlp=`);
2. the same run with `--mapping=genes --genes=16 --variants=32` (or reuse one with `--genes=`);
3. for each: fidelity `fd_oracle` / `kid_oracle` / `pr_oracle` (10 000 generated vs 10 000 real
   images) and generator-side `mig_gen` / `dci_gen` through the factor oracle, with the first 16
   dimensions of z as the code (`num_z_codes=16`): the whole genome (gene indices) of the genes
   network, 16 of the 512 Gaussian inputs of the MLP network (see docs/RESULTS.md for what that
   can and cannot say);
4. 16 samples of each (`generate.py --seeds=0-15`), tiled and put side by side in docs/images/.

Also records each network's mapping parameters (and G's), the snapshot size and the training
wall time. Writes docs/results/stylegenes_vs_mlp_<data>.json atomically and prints the table of
docs/RESULTS.md. `--budget-minutes` only states the budget (a line warns when it was exceeded).
"""

import os
import shutil
import sys
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The stage runner, metric-log reader and file helpers are those of the ID-GAN row.
from idgan_vs_vae import (  # noqa: E402
    _metrics,
    _newest,
    _reused,
    _Stages,
    finish,
    side_by_side,
)
from idgan_vs_vae import results_table as idgan_results_table  # noqa: E402

NUM_Z_CODES = 16   # the whole genome of a 16-gene network; the first 16 z dims of the MLP network
METRICS = [('fd_oracle,kid_oracle,pr_oracle', None),
           ('mig_gen', dict(num_z_codes=NUM_Z_CODES)),
           ('dci_gen', dict(num_z_codes=NUM_Z_CODES, num_train=2000, num_test=1000))]
DATASETS = ('dsprites', 'shapes3d')
# (key, table name, extra train.py arguments, run-directory name after '-<data>')
MODELS = [('mlp', 'MLP, 2 × 512', [], '-stylegan2-batch'),
          ('genes', 'genes, 16 × 32', ['--mapping=genes', '--genes=16', '--variants=32'], '-stylegan2-genes-batch')]

TABLE_COLUMNS = [('kimg', 'kimg', '{:g}'),
                 ('fd_oracle ↓', 'fd_oracle', '{:.1f}'),
                 ('kid_oracle ↓', 'kid_oracle', '{:.3f}'),
                 ('pr_oracle P / R', ('pr_oracle_precision', 'pr_oracle_recall'), '{:.3f}'),
                 ('mig_gen', 'mig_gen', '{:.3f}'),
                 ('dci_gen D / C / I', ('dci_gen_disentanglement', 'dci_gen_completeness',
                                        'dci_gen_informativeness_test'), '{:.3f}'),
                 ('mapping parameters', 'mapping_parameters', '{:,}'),
                 ('G parameters', 'G_parameters', '{:,}'),
                 ('snapshot MB', 'snapshot_mb', '{:.1f}'),
                 ('training min', 'train_minutes', '{:.1f}')]


def train_command(py, outdir, kimg, seed, extra, data='dsprites'):
    """train.py arguments of one of the two runs; `extra` selects the mapping."""
    return [py, 'train.py', f'--outdir={outdir}', f'--data={data}'] + list(extra) + [
        '--cbase=2048', '--cmax=32', '--map=2', '--batch=8', f'--kimg={kimg:g}', '--tick=1', '--snap=100',
        '--workers=0', f'--seed={seed}']


def count_parameters(module):
    """Number of trainable-parameter elements of a torch module (buffers such as w_avg excluded)."""
    return int(sum(p.numel() for p in module.parameters()))


def network_size(pkl):
    """Mapping and G parameter counts of a snapshot's G_ema, and the file size in MB."""
    from training.snapshot import load_network_pkl
    G = load_network_pkl(pkl)['G_ema']
    return dict(mapping_parameters=count_parameters(G.mapping), G_parameters=count_parameters(G),
                mapping_class=type(G.mapping).__name__, snapshot_mb=os.path.getsize(pkl) / 2**20)


def tile(paths, out_path, columns):
    """Equal-sized PNGs in a grid of `columns` (row-major, no gap), written atomically."""
    from PIL import Image
    images = [Image.open(p).convert('RGB') for p in paths]
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    canvas = Image.new('RGB', (w * columns, h * rows), (255, 255, 255))
    for i, im in enumerate(images):
        canvas.paste(im, ((i % columns) * w, (i // columns) * h))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f'{out_path}.tmp{os.getpid()}.png'
    canvas.save(tmp)
    os.replace(tmp, out_path)


def results_table(rows):
    """Markdown table of [(mapping name, results dict)] over TABLE_COLUMNS."""
    return idgan_results_table(rows, TABLE_COLUMNS, first='mapping')


@click.command()
@click.option('--data', help='Built-in dataset', type=click.Choice(DATASETS), default='dsprites', show_default=True)
@click.option('--outdir', help='Where the training runs and metric logs go  [default: runs/stylegenes_vs_mlp, '
              'runs/stylegenes_vs_mlp_shapes3d]')
@click.option('--mlp', 'mlp_pkl', help='Reuse this MLP-mapping snapshot instead of training stage 1', metavar='PKL')
@click.option('--genes', 'genes_pkl', help='Reuse this genes snapshot instead of training stage 2', metavar='PKL')
@click.option('--kimg', help='Length of each run', type=click.FloatRange(min=0, min_open=True), default=8,
              show_default=True)
@click.option('--seed', help='Training seed (metrics use seed 0)', type=int, default=0, show_default=True)
@click.option('--budget-minutes', help='Stated wall-time budget (recorded; a line warns when exceeded)', type=float,
              default=30, show_default=True)
@click.option('--json', 'json_path', help='Result file  [default: docs/results/stylegenes_vs_mlp_<data>.json]')
@click.option('--images', 'images_dir', help='Where the picture goes', default=os.path.join(REPO, 'docs/images'),
              show_default=True)
def main(data, outdir, mlp_pkl, genes_pkl, kimg, seed, budget_minutes, json_path, images_dir):
    """Train (or reuse) a StyleGAN2 with the mapping MLP and one with genes, then compare them."""
    if outdir is None:
        outdir = 'runs/stylegenes_vs_mlp' + ('' if data == 'dsprites' else f'_{data}')
    if json_path is None:
        json_path = os.path.join(REPO, f'docs/results/stylegenes_vs_mlp_{data}.json')
    reuse = dict(mlp=mlp_pkl, genes=genes_pkl)
    for name, path in reuse.items():
        if path is not None and not os.path.isfile(path):
            raise click.BadParameter(f'{path} is not a file; give a snapshot .pkl or leave --{name} out to train one.',
                                     param_hint=f'--{name}')
    py = sys.executable
    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    stages = _Stages(5, budget_minutes)
    snapshots, train_minutes = {}, {}
    for key, label, extra, run_pattern in MODELS:
        pkl = reuse[key]
        stages.begin(f'training: {label} mapping, {kimg:g} kimg' + (' (reused)' if pkl else ''))
        if pkl is None:
            stages.run(train_command(py, outdir, kimg, seed, extra, data))
            pkl = _newest(outdir, f'-{data}{run_pattern}', 'network-snapshot-')
        else:
            stages.commands.append(_reused(pkl))
        snapshots[key] = os.path.abspath(pkl)
        stages.end()
        train_minutes[key] = None if reuse[key] else stages.log[-1]['seconds'] / 60

    results = {}
    for key, label, _, _ in MODELS:
        stages.begin(f'fidelity and generator side of the {label} network')
        scores, options = _metrics(stages, py, snapshots[key], os.path.join(outdir, f'metrics-{key}'), METRICS,
                                   data)
        results[key] = dict(kimg=kimg, **scores, **network_size(snapshots[key]), train_minutes=train_minutes[key])
        stages.end()

    stages.begin('pictures: 16 samples of each, MLP left, genes right')
    grids = []
    for key, _, _, _ in MODELS:
        samples_dir = os.path.join(outdir, f'samples-{key}')
        shutil.rmtree(samples_dir, ignore_errors=True)
        stages.run([py, 'generate.py', f'--network={snapshots[key]}', '--seeds=0-15', f'--outdir={samples_dir}'])
        grids.append(os.path.join(outdir, f'samples-{key}.png'))
        tile([os.path.join(samples_dir, f'seed{s:04d}.png') for s in range(16)], grids[-1], columns=4)
    picture = os.path.join(images_dir, f'stylegenes_vs_mlp_samples_{data}.png')
    side_by_side(grids, picture, gap=8, scale=2)
    stages.end()

    wall_minutes = (time.time() - stages.start) / 60
    table = results_table([(label, results[key]) for key, label, _, _ in MODELS])
    result = dict(
        command='python experiments/stylegenes_vs_mlp.py ' + ' '.join(sys.argv[1:]),
        dataset=data, seed=seed, kimg=kimg, budget_minutes=budget_minutes, wall_minutes=round(wall_minutes, 1),
        threads=os.environ.get('OMP_NUM_THREADS'), snapshots=snapshots, num_z_codes=NUM_Z_CODES,
        metric_options={names: options or 'defaults' for names, options in METRICS},
        **results, stages=stages.log, pictures=[os.path.relpath(picture, REPO)], table=table)
    finish(json_path, result, table, wall_minutes, budget_minutes)


if __name__ == '__main__':
    main()
