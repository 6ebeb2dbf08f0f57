"""InfoGAN against InfoGAN-CR on dSprites: does the contrastive regulariser raise disentanglement? Seed 0.

    OMP_NUM_THREADS=1 python experiments/infogan_vs_cr.py --outdir=runs/infogan_vs_cr

Claim tested (Lin et al., ICML 2020, table 1): on dSprites, adding the contrastive regulariser to
InfoGAN raises the FactorVAE score from about 0.82 to about 0.88 (full GPU training).

Stages, each an ordinary command of the project, printed before it runs:

1. `train.py --cfg=infogan` with docs/INFOGAN.md's CPU widths (`--cbase=1024 --cmax=32 --batch=16
   --aug=noaug`) for `--kimg` (default 10; or reuse one with `--infogan=`);
2. `train.py --cfg=infogan-cr`, same seed, widths and length, with α switched on at
   CR_START_FRACTION of the run (or reuse one with `--cr=`);
3. for both: FactorVAE and MIG through Q (`calc_metrics.py`, FactorVAE with reduced votes), and the
   generator-side `mig_gen` (factor oracle);
4. the traversals of both generators for the same seeds, side by side, into docs/images/.

The two presets differ only where the method does: `infogan-cr` adds H and the CR term and, as the
official dSprites code, weights the continuous MI term 0.05 instead of 0.1. Writes
docs/results/infogan_vs_cr_dsprites.json atomically (numbers, commands, per-stage wall time, the
last tick's Q and H statistics) and prints the table of docs/RESULTS.md. Budget: about 30 minutes
of wall time on the shared 2-core machine (`--budget-minutes` only states it).
"""

import json
import os
import shutil
import sys
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'experiments'))

import idgan_vs_vae as base  # noqa: E402  (its stage runner, metric reader and picture helpers)

WIDTHS = ['--cbase=1024', '--cmax=32', '--batch=16', '--aug=noaug']
# The official schedule turns α on for the last ~10% of ~300k iterations; a 10 kimg run has 625 steps,
# so H (trained from scratch at the switch) gets the last 40% instead, 250 steps of batch 16.
CR_START_FRACTION = 0.6
METRICS = [('factorvae', dict(num_train=500, num_eval=250, num_variance_estimate=1000)),
           ('mig', None),
           ('mig_gen', None)]
TRAINING_STATS = ['Info/cont_mse', 'CR/H_accuracy', 'CR/alpha']

TABLE_COLUMNS = [('FactorVAE (Q)', 'factorvae', '{:.3f}'),
                 ('MIG (Q)', 'mig', '{:.3f}'),
                 ('mig_gen', 'mig_gen', '{:.3f}'),
                 ('Q: code MSE (last tick)', 'Info/cont_mse', '{:.3f}'),
                 ('H accuracy (last tick)', 'CR/H_accuracy', '{:.3f}')]


def results_table(rows):
    """Markdown table of [(model name, results dict)] over TABLE_COLUMNS ('–' where a model has no such number)."""
    lines = ['| model | ' + ' | '.join(name for name, _, _ in TABLE_COLUMNS) + ' |',
             '| --- |' + ' ---: |' * len(TABLE_COLUMNS)]
    for model, results in rows:
        lines.append(f'| {model} | ' + ' | '.join(base.format_cell(results, key, fmt) for _, key, fmt in TABLE_COLUMNS) + ' |')
    return '\n'.join(lines)


def last_tick_stats(run_dir, names=TRAINING_STATS):
    """Means of the named training statistics in the last line of <run_dir>/stats.jsonl that has them."""
    path = os.path.join(run_dir, 'stats.jsonl')
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    out = {}
    for name in names:
        for record in reversed(lines):
            value = record.get(name)
            if isinstance(value, dict) and value.get('num', 1) > 0 and value.get('mean') is not None:
                out[name] = float(value['mean'])
                break
    return out


def cr_start_kimg(kimg, fraction=CR_START_FRACTION):
    return round(kimg * fraction, 3)


@click.command()
@click.option('--outdir', help='Where the training runs and metric logs go', default='runs/infogan_vs_cr', show_default=True)
@click.option('--infogan', 'infogan_pkl', help='Reuse this InfoGAN snapshot instead of training stage 1', metavar='PKL')
@click.option('--cr', 'cr_pkl', help='Reuse this InfoGAN-CR snapshot instead of training stage 2', metavar='PKL')
@click.option('--kimg', help='Length of each run', type=click.FloatRange(min=0, min_open=True), default=10,
              show_default=True)
@click.option('--seed', help='Training seed of both runs (metrics use seed 0)', type=int, default=0, show_default=True)
@click.option('--budget-minutes', help='Stated wall-time budget (recorded; a line warns when exceeded)', type=float,
              default=30, show_default=True)
@click.option('--json', 'json_path', help='Result file',
              default=os.path.join(REPO, 'docs/results/infogan_vs_cr_dsprites.json'), show_default=True)
@click.option('--images', 'images_dir', help='Where the pictures go', default=os.path.join(REPO, 'docs/images'),
              show_default=True)
def main(outdir, infogan_pkl, cr_pkl, kimg, seed, budget_minutes, json_path, images_dir):
    """Train (or reuse) InfoGAN and InfoGAN-CR on dSprites with one seed and length, then compare their codes."""
    for name, path in (('--infogan', infogan_pkl), ('--cr', cr_pkl)):
        if path is not None and not os.path.isfile(path):
            raise click.BadParameter(f'{path} is not a file; give a snapshot .pkl or leave {name} out to train one.',
                                     param_hint=name)
    py = sys.executable
    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    stages = base._Stages(5, budget_minutes)
    start_kimg = cr_start_kimg(kimg)
    common = [f'--outdir={outdir}', '--data=dsprites', f'--seed={seed}'] + WIDTHS + \
             [f'--kimg={kimg:g}', '--tick=1', '--snap=1000', '--workers=0']

    snapshots = {}
    for key, cfg, extra, given in (('infogan', 'infogan', [], infogan_pkl),
                                   ('cr', 'infogan-cr', [f'--cr-start-kimg={start_kimg:g}'], cr_pkl)):
        stages.begin(f'stage {len(snapshots) + 1}: {cfg} on dSprites, {kimg:g} kimg' + (' (reused)' if given else ''))
        if given is None:
            stages.run([py, 'train.py', f'--cfg={cfg}'] + common + extra)
            given = base._newest(outdir, f'-dsprites-{cfg}-batch', 'network-snapshot-')
        else:
            stages.commands.append(base._reused(given))
        snapshots[key] = os.path.abspath(given)
        stages.end()

    results = {}
    for key, label in (('infogan', 'InfoGAN'), ('cr', 'InfoGAN-CR')):
        stages.begin(f'{label}: FactorVAE and MIG through Q, mig_gen through the oracle')
        scores, options = base._metrics(stages, py, snapshots[key], os.path.join(outdir, f'metrics-{key}'), METRICS, 'dsprites')
        scores.update(last_tick_stats(os.path.dirname(snapshots[key])))
        results[key] = scores
        stages.end()

    stages.begin('pictures: the two generators\' traversals, same seeds')
    pictures = []
    for key in snapshots:
        folder = os.path.join(outdir, f'traverse-{key}')
        shutil.rmtree(folder, ignore_errors=True)
        stages.run([py, 'generate.py', f'--network={snapshots[key]}', '--traverse', '--seeds=0-1', '--steps=7',
                    f'--outdir={folder}'])
    for s in (0, 1):
        path = os.path.join(images_dir, f'infogan_vs_cr_traversal_seed{s}_dsprites.png')
        base.side_by_side([os.path.join(outdir, f'traverse-{key}', f'traverse-seed{s:04d}.png') for key in snapshots], path)
        pictures.append(path)
    stages.end()

    wall_minutes = (time.time() - stages.start) / 60
    table = results_table([('InfoGAN', results['infogan']), (f'InfoGAN-CR (α on from {start_kimg:g} kimg)', results['cr'])])
    result = dict(
        command='python experiments/infogan_vs_cr.py ' + ' '.join(sys.argv[1:]),
        dataset='dsprites', seed=seed, kimg=kimg, cr_start_kimg=start_kimg, widths=WIDTHS,
        budget_minutes=budget_minutes, wall_minutes=round(wall_minutes, 1), threads=os.environ.get('OMP_NUM_THREADS'),
        infogan_snapshot=snapshots['infogan'], cr_snapshot=snapshots['cr'],
        infogan=results['infogan'], infogan_cr=results['cr'], metric_options=options,
        stages=stages.log, pictures=[os.path.relpath(p, REPO) for p in pictures], table=table)
    base.finish(json_path, result, table, wall_minutes, budget_minutes)


if __name__ == '__main__':
    main()
