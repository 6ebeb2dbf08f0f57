"""ModelCentrality over several seeds of one VAE: does the unsupervised pick find a well-disentangled run?

    OMP_NUM_THREADS=1 python experiments/model_centrality.py --outdir=runs/model_centrality

Claim tested (Lin et al., ICML 2020, section 5): among models of one method that differ only in
their seed, the medoid of the cross FactorVAE similarity matrix scores close to the best model by
the supervised FactorVAE score, and centrality correlates with that score.

Stages, each an ordinary command of the project, printed before it runs:

1. `--seeds` (default 0-7) runs of `train.py --cfg=betavae --beta=8 --code-dim=10 --kimg=40` on
   dSprites, the ID-GAN row's β-VAE recipe at twice its length (`--reuse` takes a finished run of
   the same cfg, β, seed and length under `--outdir` instead of training it again);
2. `select_model.py` over their final snapshots with reduced `--groups/--group-size/--std-samples`
   (VAEs render with their decoder from N(0, I) codes and encode with E's mean);
3. each model's supervised FactorVAE score (`calc_metrics.py`, reduced votes: see SUPERVISED_OPTIONS);
4. the picture: the symmetrised similarity matrix beside the selected model's traversal.

Reports the pick's supervised score against the best, median and worst, where the pick ranks, and
the Spearman rank correlation between centrality and the supervised score. Writes
docs/results/model_centrality_seeds_dsprites.json atomically (numbers, commands, per-stage wall
time) and prints the table of docs/RESULTS.md. Budget: about 40 minutes of wall time on the shared
2-core machine (`--budget-minutes` only states it).
"""

import json
import os
import sys
import time

import click
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'experiments'))

from idgan_vs_vae import _Stages, finish, read_last_result, side_by_side  # noqa: E402

# Each objective's strength option and value (the ID-GAN row's β = 8; VAE.md's defaults otherwise).
VAE_HYPER = {'betavae': ('beta', 8.0), 'btcvae': ('beta', 6.0), 'factorvae': ('gamma', 10.0)}
# Reduced sizes (library defaults: 10 000 / 5 000 / 10 000; the paper's M = 500, L = 100, 10 000).
SUPERVISED_OPTIONS = dict(num_train=500, num_eval=250, num_variance_estimate=1000)
CENTRALITY_SIZES = dict(groups=100, group_size=25, std_samples=1000)


def parse_seeds(text):
    """'0-7' or '0,2,5' or '0-3,9' -> sorted unique ints."""
    seeds = set()
    for part in str(text).split(','):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition('-')
        try:
            lo, hi = int(lo), int(hi or lo)
        except ValueError:
            raise click.BadParameter(f'{part!r} is not a seed or a range like 0-7.', param_hint='--seeds')
        seeds.update(range(lo, hi + 1))
    if len(seeds) < 3:
        raise click.BadParameter(f'{text!r} gives {len(seeds)} seed(s); a rank correlation needs at least 3 (the '
                                 f'row uses 8).', param_hint='--seeds')
    return sorted(seeds)


def find_finished_run(outdir, cfg, seed, kimg, hyper):
    """The final vae-snapshot of a finished run of this cfg, seed, length and strength under outdir, or None."""
    name, value = hyper
    if not os.path.isdir(outdir):
        return None
    for run in sorted(os.listdir(outdir), reverse=True):
        path = os.path.join(outdir, run, 'training_options.json')
        if f'-dsprites-{cfg}-' not in run or not os.path.isfile(path):
            continue
        with open(path) as f:
            options = json.load(f)
        if (options.get('random_seed') != seed or float(options.get('total_kimg', -1)) != float(kimg)
                or float(options.get('objective_kwargs', {}).get(name, -1)) != value):
            continue
        snaps = sorted(f for f in os.listdir(os.path.join(outdir, run))
                       if f.startswith('vae-snapshot-') and f.endswith('.pkl'))
        if snaps and int(snaps[-1][len('vae-snapshot-'):-4]) >= int(kimg):
            return os.path.join(outdir, run, snaps[-1])
    return None


def summarize(seeds, centrality, supervised):
    """The row's numbers: the pick (highest centrality) against the best, median and worst supervised score."""
    from scipy.stats import spearmanr
    centrality, supervised = np.asarray(centrality, float), np.asarray(supervised, float)
    pick = int(np.argmax(centrality))   # first of ties, as select_model.py's ranking
    order = sorted(range(len(seeds)), key=lambda i: (-supervised[i], i))
    defined = len(set(centrality.tolist())) > 1 and len(set(supervised.tolist())) > 1
    rho = float(spearmanr(centrality, supervised).statistic) if defined else None
    return dict(selected_seed=seeds[pick], selected_supervised=float(supervised[pick]),
                selected_rank_by_supervised=order.index(pick) + 1,
                best=float(supervised.max()), best_seed=seeds[order[0]], median=float(np.median(supervised)),
                worst=float(supervised.min()), worst_seed=seeds[order[-1]], spearman=rho, num_models=len(seeds))


def results_table(seeds, centrality, supervised):
    """Markdown table, one line per seed, ordered by centrality (the selection first)."""
    order = sorted(range(len(seeds)), key=lambda i: (-centrality[i], i))
    by_score = sorted(range(len(seeds)), key=lambda i: (-supervised[i], i))
    lines = ['| centrality rank | seed | centrality | supervised FactorVAE | rank by FactorVAE |',
             '| ---: | ---: | ---: | ---: | ---: |']
    for rank, i in enumerate(order, 1):
        mark = ' (selected)' if rank == 1 else ''
        lines.append(f'| {rank}{mark} | {seeds[i]} | {centrality[i]:.3f} | {supervised[i]:.3f} | {by_score.index(i) + 1} |')
    return '\n'.join(lines)


def matrix_image(matrix, labels, path, cell=36, notes=()):
    """The similarity matrix as a grey-level picture (white = 0, black = 1) with its values printed and
    `notes` (lines of text) below it; written atomically."""
    from PIL import Image, ImageDraw
    matrix = np.asarray(matrix, float)
    n, margin = matrix.shape[0], cell
    image = Image.new('RGB', (margin + n * cell, margin + n * cell + 14 * len(notes) + (8 if notes else 0)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k, label in enumerate(labels):
        draw.text((margin + k * cell + 6, 10), label, fill=(0, 0, 0))
        draw.text((4, margin + k * cell + 12), label, fill=(0, 0, 0))
    for k, note in enumerate(notes):
        draw.text((4, margin + n * cell + 8 + 14 * k), note, fill=(0, 0, 0))
    for i in range(n):
        for j in range(n):
            level = int(round(255 * (1 - np.clip(matrix[i, j], 0, 1))))
            box = (margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1, margin + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(level, level, level))
            ink = (0, 0, 0) if level > 110 else (255, 255, 255)
            draw.text((box[0] + 4, box[1] + 12), f'{matrix[i, j]:.2f}'[1:] if matrix[i, j] < 1 else '1.0', fill=ink)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}.png'
    image.save(tmp)
    os.replace(tmp, path)


@click.command()
@click.option('--outdir', help='Where the training runs and metric logs go', default='runs/model_centrality',
              show_default=True)
@click.option('--cfg', help='VAE objective of every run', type=click.Choice(sorted(VAE_HYPER)), default='betavae',
              show_default=True)
@click.option('--seeds', 'seeds_text', help='Training seeds, e.g. 0-7', default='0-7', show_default=True)
@click.option('--kimg', help='Length of every run', type=float, default=40, show_default=True)
@click.option('--reuse/--no-reuse', help='Reuse finished runs of the same cfg, strength, seed and length in --outdir',
              default=False, show_default=True)
@click.option('--budget-minutes', help='Stated wall-time budget (recorded; a line warns when exceeded)', type=float,
              default=40, show_default=True)
@click.option('--json', 'json_path', help='Result file',
              default=os.path.join(REPO, 'docs/results/model_centrality_seeds_dsprites.json'), show_default=True)
@click.option('--images', 'images_dir', help='Where the picture goes', default=os.path.join(REPO, 'docs/images'),
              show_default=True)
def main(outdir, cfg, seeds_text, kimg, reuse, budget_minutes, json_path, images_dir):
    """Train several seeds of one VAE on dSprites, select one by ModelCentrality, compare with supervised scores."""
    seeds = parse_seeds(seeds_text)
    py = sys.executable
    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    hyper = VAE_HYPER[cfg]
    stages = _Stages(4, budget_minutes)

    stages.begin(f'stage 1: {len(seeds)} {cfg} runs on dSprites (seeds {seeds_text}), {kimg:g} kimg each')
    snapshots = []
    for seed in seeds:
        found = find_finished_run(outdir, cfg, seed, kimg, hyper) if reuse else None
        if found is None:
            stages.run([py, 'train.py', f'--outdir={outdir}', '--data=dsprites', f'--cfg={cfg}',
                        f'--{hyper[0]}={hyper[1]:g}', '--code-dim=10', f'--kimg={kimg:g}', '--tick=8', '--snap=100',
                        '--workers=0', f'--seed={seed}'])
            found = find_finished_run(outdir, cfg, seed, kimg, hyper)
            if found is None:
                raise click.ClickException(f'train.py wrote no final snapshot for seed {seed} under {outdir}.')
        else:
            stages.commands.append(f'reused {found} (seed {seed})')
        snapshots.append(os.path.abspath(found))
    stages.end()

    stages.begin(f'ModelCentrality over the {len(seeds)} final snapshots (select_model.py, reduced sizes)')
    select_json = os.path.join(outdir, 'select_model.json')
    stages.run([py, 'select_model.py', '--networks=' + ','.join(snapshots), f'--groups={CENTRALITY_SIZES["groups"]}',
                f'--group-size={CENTRALITY_SIZES["group_size"]}', f'--std-samples={CENTRALITY_SIZES["std_samples"]}',
                '--seed=0', f'--out={select_json}'])
    with open(select_json) as f:
        selection = json.load(f)
    by_path = {os.path.abspath(p): k for k, p in enumerate(selection['networks'])}
    index = [by_path[p] for p in snapshots]
    centrality = [selection['centrality'][k] for k in index]
    symmetric = np.asarray(selection['symmetric'])[np.ix_(index, index)]
    stages.end()

    stages.begin(f'supervised FactorVAE score of every run (calc_metrics.py, {SUPERVISED_OPTIONS})')
    supervised = []
    for seed, pkl in zip(seeds, snapshots):
        run_dir = os.path.join(outdir, 'metrics', f'seed{seed}')
        os.makedirs(run_dir, exist_ok=True)
        stages.run([py, 'calc_metrics.py', f'--network={pkl}', '--metrics=factorvae', '--data=dsprites',
                    f'--run-dir={run_dir}', '--seed=0', '--options=' + json.dumps(SUPERVISED_OPTIONS)])
        supervised.append(read_last_result(run_dir, 'factorvae', pkl)['factorvae'])
    stages.end()

    stages.begin('picture: similarity matrix beside the selected model\'s traversal')
    summary = summarize(seeds, centrality, supervised)
    pick = seeds.index(summary['selected_seed'])
    matrix_png = os.path.join(outdir, 'similarity.png')
    notes = ['symmetrised C[i, j]; s = seed'] + [
        f's{s}: centrality {c:.3f}, FactorVAE {v:.3f}' + ('  <- selected' if k == pick else '')
        for k, (s, c, v) in enumerate(zip(seeds, centrality, supervised))] + [f'right: traversal of s{seeds[pick]}']
    matrix_image(symmetric, [f's{s}' for s in seeds], matrix_png, cell=64, notes=notes)
    traversal = os.path.join(os.path.dirname(snapshots[pick]),
                             'traversal' + os.path.basename(snapshots[pick])[len('vae-snapshot-'):-4] + '.png')
    picture = os.path.join(images_dir, 'model_centrality_seeds_dsprites.png')
    side_by_side([matrix_png, traversal], picture, gap=16, scale=1)
    stages.commands.append(f'{matrix_png} + {traversal} -> {picture}')
    stages.end()

    wall_minutes = (time.time() - stages.start) / 60
    table = results_table(seeds, centrality, supervised)
    result = dict(
        command='python experiments/model_centrality.py ' + ' '.join(sys.argv[1:]),
        dataset='dsprites', cfg=cfg, hyper={hyper[0]: hyper[1]}, code_dim=10, kimg=kimg, seeds=seeds,
        budget_minutes=budget_minutes, wall_minutes=round(wall_minutes, 1), threads=os.environ.get('OMP_NUM_THREADS'),
        centrality_sizes=CENTRALITY_SIZES, supervised_options=SUPERVISED_OPTIONS,
        models=[dict(seed=s, snapshot=p, centrality=c, supervised_factorvae=v)
                for s, p, c, v in zip(seeds, snapshots, centrality, supervised)],
        symmetric=symmetric.tolist(), scores=selection['scores'], summary=summary,
        stages=stages.log, pictures=[os.path.relpath(picture, REPO)], table=table)
    rho = summary['spearman']
    finish(json_path, result, table, wall_minutes, budget_minutes, summary=(
        f'selected seed {summary["selected_seed"]}: supervised FactorVAE {summary["selected_supervised"]:.3f} '
        f'(rank {summary["selected_rank_by_supervised"]} of {len(seeds)}); best {summary["best"]:.3f}, '
        f'median {summary["median"]:.3f}, worst {summary["worst"]:.3f}; Spearman '
        + ('undefined (equal scores)' if rho is None else f'{rho:+.3f}')))


if __name__ == '__main__':
    main()
