"""ID-GAN's R1 weight on dSprites: StyleGAN2's `auto` gamma against the ID-GAN papers' gamma = 10. One command, seed 0.

    OMP_NUM_THREADS=1 python experiments/idgan_r1_gamma.py --vae=runs/x/vae-snapshot-000100.pkl \\
        --tag=btcvae --distill-weight=0.001

For each R1 weight in `--gammas` (default 0.1, the `auto` rule's 0.0002 * 64^2 / 8 at batch 8, and
10, the value of both ID-GAN references), one ID-GAN on the same VAE, same seed and length
(`train.py --cfg=idgan --gamma=<g>` with the demo's CPU widths), then for each snapshot
`fd_oracle`, `pr_oracle` and `mig_gen` (defaults: 10 000 images each), the final code-recovery error
`IDGAN/recovery_mse` from stats.jsonl, and the first 16 samples of the last `fakes*.png`, put side
by side in docs/images/idgan_r1_gamma_<tag>.png. Reuse trained runs with `--gan=<gamma>=<pkl>`.
Writes docs/results/idgan_r1_gamma_<tag>.json atomically and prints the table.
"""

import json
import os
import sys
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from idgan_vs_vae import _metrics, _newest, _reused, _Stages, finish, side_by_side  # noqa: E402

METRICS = [('fd_oracle,pr_oracle,mig_gen', None)]
COLUMNS = [('fd_oracle ↓', 'fd_oracle', '{:.1f}'), ('precision', 'pr_oracle_precision', '{:.3f}'),
           ('recall', 'pr_oracle_recall', '{:.3f}'), ('mig_gen', 'mig_gen', '{:.3f}'),
           ('code-recovery MSE ↓', 'recovery_mse', '{:.3f}')]


def gan_command(py, outdir, vae_pkl, gamma, kimg, distill_weight, seed):
    """train.py arguments of one ID-GAN of the sweep (row 1's CPU widths and cadence, R1 weight `gamma`)."""
    return [py, 'train.py', f'--outdir={outdir}', '--data=dsprites', '--cfg=idgan', f'--vae={vae_pkl}',
            '--cbase=2048', '--cmax=32', '--map=2', '--batch=8', f'--kimg={kimg:g}', '--tick=1', '--snap=5',
            f'--distill-weight={distill_weight:g}', f'--gamma={gamma:g}', '--workers=0', f'--seed={seed}']


def final_recovery_mse(run_dir):
    """The mean code-recovery error of the last stats.jsonl line that has it (the final tick)."""
    value = None
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        for line in f:
            entry = json.loads(line).get('IDGAN/recovery_mse') if line.strip() else None
            if entry is not None:
                value = float(entry['mean'])
    if value is None:
        raise click.ClickException(f'{run_dir}/stats.jsonl has no IDGAN/recovery_mse; is this an ID-GAN run?')
    return value


def crop_fakes(run_dir, out_path, cells=(8, 2)):
    """The top-left cells[0] x cells[1] tiles of the run's newest fakes*.png (64x64 tiles), written atomically."""
    from PIL import Image
    grids = sorted(f for f in os.listdir(run_dir) if f.startswith('fakes') and f[5:11].isdigit())
    if not grids:
        raise click.ClickException(f'{run_dir} holds no fakes*.png grid.')
    image = Image.open(os.path.join(run_dir, grids[-1]))
    tile = image.width // max(image.width // 64, 1)
    tmp = f'{out_path}.tmp{os.getpid()}.png'
    image.crop((0, 0, tile * cells[0], tile * cells[1])).save(tmp)
    os.replace(tmp, out_path)
    return out_path


def table(rows):
    lines = ['| R1 γ | ' + ' | '.join(name for name, _, _ in COLUMNS) + ' |', '| ---: |' + ' ---: |' * len(COLUMNS)]
    for gamma, results in rows:
        lines.append(f'| {gamma:g} | ' + ' | '.join(fmt.format(results[key]) for _, key, fmt in COLUMNS) + ' |')
    return '\n'.join(lines)


def _parse_gans(ctx, param, values):
    out = {}
    for value in values:
        gamma, sep, path = value.partition('=')
        try:
            gamma = float(gamma)
        except ValueError:
            gamma = None
        if not sep or gamma is None or not os.path.isfile(path):
            raise click.BadParameter(f'{value!r}: write GAMMA=PATH with an existing network snapshot.',
                                     param_hint='--gan')
        out[gamma] = path
    return out


def _parse_gammas(ctx, param, value):
    try:
        gammas = [float(g) for g in value.split(',') if g.strip()]
    except ValueError:
        gammas = []
    if not gammas or min(gammas) < 0:
        raise click.BadParameter(f'{value!r}: give non-negative numbers separated by commas, e.g. 0.1,10.',
                                 param_hint='--gammas')
    return gammas


@click.command()
@click.option('--vae', 'vae_pkl', help='The VAE snapshot every ID-GAN of the sweep distils', required=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option('--tag', help='Name of the teacher in the file names (e.g. betavae, btcvae)', required=True)
@click.option('--gammas', help='R1 weights to compare', default='0.1,10', show_default=True, callback=_parse_gammas)
@click.option('--kimg', help='Length of each ID-GAN run', type=click.FloatRange(min=0, min_open=True), default=10,
              show_default=True)
@click.option('--distill-weight', help='λ of every run', type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option('--gan', 'gans', help='Reuse GAMMA=<network snapshot> instead of training that run; repeat',
              multiple=True, callback=_parse_gans)
@click.option('--seed', type=int, default=0, show_default=True)
@click.option('--outdir', help='Where the runs and metric logs go  [default: runs/idgan_r1_gamma_<tag>]')
@click.option('--budget-minutes', type=float, default=30, show_default=True,
              help='Stated wall-time budget (recorded; a line warns when exceeded)')
def main(vae_pkl, tag, gammas, kimg, distill_weight, gans, seed, outdir, budget_minutes):
    """Train (or reuse) one ID-GAN per R1 weight on one VAE and compare fidelity, mig_gen and code recovery."""
    py = sys.executable
    outdir = os.path.abspath(outdir or os.path.join(REPO, 'runs', f'idgan_r1_gamma_{tag}'))
    vae_pkl = os.path.abspath(vae_pkl)
    stages = _Stages(2 * len(gammas) + 1, budget_minutes)
    rows, runs, pictures = [], {}, []
    for gamma in gammas:
        stages.begin(f'ID-GAN, R1 γ = {gamma:g}, λ = {distill_weight:g}, {kimg:g} kimg'
                     + (' (reused)' if gamma in gans else ''))
        run_root = os.path.join(outdir, f'gamma{gamma:g}')
        if gamma in gans:
            pkl = os.path.abspath(gans[gamma])
            stages.commands.append(_reused(pkl))
        else:
            os.makedirs(run_root, exist_ok=True)
            stages.run(gan_command(py, run_root, vae_pkl, gamma, kimg, distill_weight, seed))
            pkl = _newest(run_root, '-dsprites-idgan', 'network-snapshot-')
        stages.end()
        stages.begin(f'fidelity and mig_gen, R1 γ = {gamma:g}')
        metric_dir = os.path.join(outdir, f'metrics-gamma{gamma:g}')
        results, _ = _metrics(stages, py, pkl, metric_dir, METRICS, 'dsprites')
        results['recovery_mse'] = final_recovery_mse(os.path.dirname(pkl))
        stages.end()
        rows.append((gamma, results))
        runs[f'{gamma:g}'] = dict(snapshot=pkl, **results)
        pictures.append(crop_fakes(os.path.dirname(pkl), os.path.join(outdir, f'fakes-gamma{gamma:g}.png')))
    stages.begin('pictures')
    picture = os.path.join(REPO, 'docs', 'images', f'idgan_r1_gamma_{tag}.png')
    side_by_side(pictures, picture)
    stages.end()
    wall_minutes = (time.time() - stages.start) / 60
    text = table(rows)
    result = dict(command='python experiments/idgan_r1_gamma.py ' + ' '.join(sys.argv[1:]), seed=seed, tag=tag,
                  vae_snapshot=vae_pkl, kimg=kimg, distill_weight=distill_weight, gammas=gammas,
                  budget_minutes=budget_minutes, wall_minutes=round(wall_minutes, 1),
                  threads=os.environ.get('OMP_NUM_THREADS'), runs=runs, stages=stages.log,
                  pictures=[os.path.relpath(picture, REPO)], table=text)
    finish(os.path.join(REPO, 'docs', 'results', f'idgan_r1_gamma_{tag}.json'), result, text, wall_minutes,
           budget_minutes)


if __name__ == '__main__':
    main()
