"""ID-GAN against its own VAE on dSprites or 3D Shapes: the ID-GAN paper's central claim, at CPU scale. Seed 0.

    OMP_NUM_THREADS=1 python experiments/idgan_vs_vae.py                      # dSprites
    OMP_NUM_THREADS=1 python experiments/idgan_vs_vae.py --data=shapes3d      # 3D Shapes look-alike, colour

Claim tested: an ID-GAN generator trained on a β-VAE's code is far more faithful to the data than the
VAE's decoder, while being about as disentangled as that decoder when both are asked the
generator's question (does moving code i move one factor of the image?).

Stages, each an ordinary command of the project, printed before it runs:

1. stage 1, a β-VAE with 10 codes (or reuse one with `--vae=`): on dSprites the README's
   `train.py --cfg=betavae --beta=8 --code-dim=10 --kimg=20`; on 3D Shapes β = 4, 100 kimg and the
   Gaussian decoder that `--recon=auto` picks for colour data (DATA_SETTINGS);
2. stage 2, ID-GAN on it with the demo's CPU widths (`--cfg=idgan --cbase=2048 --cmax=32 --map=2
   --batch=8 --distill-weight=0.1`) for `--gan-kimg` (default 20, twice the demo's 10; or reuse one
   with `--gan=`), with a Gaussian nuisance of `--nuisance-dim` (0 on dSprites, the official
   ID-GAN's 256 on 3D Shapes);
3. encoder-side FactorVAE / MIG / DCI of the VAE (`calc_metrics.py`; FactorVAE and DCI with reduced
   sample sizes, listed in the JSON);
4. generator-side `mig_gen` / `dci_gen` (factor oracle) and fidelity `fd_oracle` / `kid_oracle` /
   `pr_oracle` of the VAE decoder (codes from the aggregate posterior) and of the ID-GAN generator;
5. the VAE decoder's traversal beside the ID-GAN generator's for the same code, and decoder vs
   generator samples (`generate.py --compare-vae`), combined into docs/images/.

Writes docs/results/idgan_vs_vae_<data>.json atomically (numbers, commands, per-stage wall time)
and prints the results table of docs/RESULTS.md. Budget: about 35 minutes of wall time on a shared
2-core machine (`--budget-minutes` only states it: the run is not cut short, the JSON records the
time it took and a line warns when it was exceeded).
"""

import json
import os
import shutil
import subprocess
import sys
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Per dataset: stage-1 β and length, the ID-GAN nuisance width, the default run directory. dSprites is the
# official ID-GAN setting (nuisance 0); 3D Shapes takes the official nuisance of its other datasets (256).
DATA_SETTINGS = dict(dsprites=dict(beta=8, vae_kimg=20, nuisance_dim=0, outdir='runs/idgan_vs_vae'),
                     shapes3d=dict(beta=4, vae_kimg=100, nuisance_dim=256, outdir='runs/idgan_vs_vae_shapes3d'))

# Reduced sample sizes (the defaults are in docs/METRICS.md); None = the metric's defaults.
ENCODER_METRICS = [('factorvae', dict(num_train=2000, num_eval=1000, num_variance_estimate=2000)),
                   ('mig', None),
                   ('dci', dict(num_train=2000, num_test=1000))]
GENERATOR_METRICS = [('mig_gen', None),
                     ('dci_gen', dict(num_train=2000, num_test=1000)),
                     ('fd_oracle,kid_oracle,pr_oracle', None)]

# (column header, result key or pair of keys, number format) of the results table.
TABLE_COLUMNS = [('FactorVAE', 'factorvae', '{:.3f}'),
                 ('MIG', 'mig', '{:.3f}'),
                 ('DCI D / C / I', ('dci_disentanglement', 'dci_completeness', 'dci_informativeness_test'), '{:.3f}'),
                 ('mig_gen', 'mig_gen', '{:.3f}'),
                 ('dci_gen D / C / I', ('dci_gen_disentanglement', 'dci_gen_completeness',
                                        'dci_gen_informativeness_test'), '{:.3f}'),
                 ('fd_oracle ↓', 'fd_oracle', '{:.1f}'),
                 ('kid_oracle ↓', 'kid_oracle', '{:.3f}'),
                 ('pr_oracle P / R', ('pr_oracle_precision', 'pr_oracle_recall'), '{:.3f}')]


def read_last_result(run_dir, metric, snapshot_pkl):
    """The `results` dict of the newest line of <run_dir>/metric-<metric>.jsonl, checked to be about snapshot_pkl."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    lines = []
    if os.path.isfile(path):
        with open(path) as f:
            lines = [line for line in f if line.strip()]
    if not lines:
        raise click.ClickException(f'{path} holds no result; calc_metrics.py did not report {metric}.')
    record = json.loads(lines[-1])
    # report_metric writes the snapshot's path relative to the run dir when it can.
    if os.path.abspath(os.path.join(run_dir, record.get('snapshot_pkl', ''))) != os.path.abspath(snapshot_pkl):
        raise click.ClickException(f'the newest line of {path} is about {record.get("snapshot_pkl")}, '
                                   f'not {snapshot_pkl}; delete the file and run again.')
    return record['results']


def format_cell(results, key, fmt):
    """One table cell: a number, several numbers joined by ' / ', or '–' where the model has no such score."""
    keys = key if isinstance(key, tuple) else (key,)
    if any(results.get(k) is None for k in keys):
        return '–'
    return ' / '.join(fmt.format(results[k]) for k in keys)


def results_table(rows, columns=None, first='model'):
    """Markdown table of [(model name, results dict)] over `columns` (default TABLE_COLUMNS)."""
    columns = TABLE_COLUMNS if columns is None else columns
    lines = [f'| {first} | ' + ' | '.join(name for name, _, _ in columns) + ' |',
             '| --- |' + ' ---: |' * len(columns)]
    for model, results in rows:
        lines.append(f'| {model} | ' + ' | '.join(format_cell(results, key, fmt) for _, key, fmt in columns) + ' |')
    return '\n'.join(lines)


def repo_relative(value, repo=REPO):
    """The result with this checkout's absolute path removed from every string (commands, snapshots)."""
    if isinstance(value, dict):
        return {key: repo_relative(item, repo) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [repo_relative(item, repo) for item in value]
    if isinstance(value, str):
        return value.replace(repo + os.sep, '')
    return value


def machine_record():
    """What decides whether another machine can repeat these numbers: the CPU, its bf16 units, what
    `--precision=auto` chose for the training runs' device, and the library versions."""
    import platform

    import torch

    from torch_utils.precision import cpu_bf16_flags, resolve_precision
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    except OSError:
        pass
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return dict(cpu=cpu, cpu_bf16_flags=list(cpu_bf16_flags()), device=device,
                precision_auto=resolve_precision('auto', device), threads=os.environ.get('OMP_NUM_THREADS'),
                torch=torch.__version__, python=platform.python_version())


def write_json_atomic(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2)
        f.write('\n')
    os.replace(tmp, path)


def finish(json_path, result, table, wall_minutes, budget_minutes, summary=None):
    """Write the result (checkout-relative paths) atomically, print the table, an optional summary line and the
    wall time, and warn when the stated budget was exceeded."""
    write_json_atomic(json_path, repo_relative({**result, 'machine': result.get('machine') or machine_record()}))
    print('\n' + table)
    if summary:
        print('\n' + summary)
    print(f'\nDone in {wall_minutes:.1f} min (budget {budget_minutes:g} min) -> {json_path}')
    if wall_minutes > budget_minutes:
        print(f'warning: the run took longer than the stated budget of {budget_minutes:g} minutes.')


def side_by_side(paths, out_path, gap=8, scale=2):
    """Paste PNGs left to right on a white background (gap in pixels before scaling); written atomically."""
    from PIL import Image
    images = [Image.open(p).convert('RGB') for p in paths]
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new('RGB', (width, max(im.height for im in images)), (255, 255, 255))
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width + gap
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f'{out_path}.tmp{os.getpid()}.png'
    canvas.save(tmp)
    os.replace(tmp, out_path)


class _Stages:
    """Runs commands stage by stage, printing each with elapsed time and an ETA against the budget."""

    def __init__(self, num_stages, budget_minutes):
        from dnnlib.progress import format_time
        self.format_time = format_time
        self.num_stages, self.budget = num_stages, budget_minutes * 60
        self.start, self.done, self.log = time.time(), 0, []

    def begin(self, title):
        elapsed = time.time() - self.start
        left = max(self.budget - elapsed, 0)
        print(f'\n== [{self.done + 1}/{self.num_stages}] {title} (elapsed {self.format_time(elapsed)}, '
              f'{self.format_time(left)} of the budget left)', flush=True)
        self.stage_start, self.title, self.commands = time.time(), title, []

    def run(self, cmd):
        print('$ ' + ' '.join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=REPO)
        self.commands.append(' '.join(['python'] + cmd[1:]))

    def end(self):
        self.log.append(dict(stage=self.title, seconds=round(time.time() - self.stage_start, 1), commands=self.commands))
        self.done += 1


# Stage-1 objectives the script can train (both weigh their regulariser with --beta), and their table names.
VAE_CFGS = {'betavae': 'β-VAE', 'btcvae': 'β-TCVAE'}


def vae_command(py, outdir, data, beta, vae_kimg, seed, vae_cfg='betavae'):
    """Stage 1: train.py arguments of the VAE (the β-VAE unless `vae_cfg` says otherwise)."""
    return [py, 'train.py', f'--outdir={outdir}', f'--data={data}', f'--cfg={vae_cfg}', f'--beta={beta:g}',
            '--code-dim=10', f'--kimg={vae_kimg:g}', '--tick=4', '--snap=100', '--workers=0', f'--seed={seed}']


def gan_command(py, outdir, data, vae_pkl, gan_kimg, nuisance_dim, seed, distill_weight=0.1, gamma=None):
    """Stage 2: train.py arguments of the ID-GAN (`--nuisance-dim` only when non-zero, the preset's default;
    `--gamma` only when given, else the idgan preset's R1 weight)."""
    extra = [f'--nuisance-dim={nuisance_dim}'] if nuisance_dim else []
    extra += [] if gamma is None else [f'--gamma={gamma:g}']
    return [py, 'train.py', f'--outdir={outdir}', f'--data={data}', '--cfg=idgan', f'--vae={vae_pkl}'] + extra + [
        '--cbase=2048', '--cmax=32', '--map=2', '--batch=8', f'--kimg={gan_kimg:g}', '--tick=1', '--snap=5',
        f'--distill-weight={distill_weight:g}', '--workers=0', f'--seed={seed}']


def variant_suffix(vae_cfg, distill_weight, gamma, gan_kimg, seed):
    """File-name suffix of a run that differs from the default row: each non-default setting, in a fixed order.
    The training seed reads `_trainseed<N>` so it is not confused with the generation seed in picture names."""
    return (('' if vae_cfg == 'betavae' else f'_{vae_cfg}') + ('' if distill_weight == 0.1 else f'_lambda{distill_weight:g}')
            + ('' if gamma is None else f'_gamma{gamma:g}') + ('' if gan_kimg == 20 else f'_gan{gan_kimg:g}kimg')
            + ('' if seed == 0 else f'_trainseed{seed}'))


def _newest(run_root, pattern_dir, prefix):
    runs = sorted(d for d in os.listdir(run_root) if pattern_dir in d and os.path.isdir(os.path.join(run_root, d)))
    for run in reversed(runs):
        snaps = sorted(f for f in os.listdir(os.path.join(run_root, run)) if f.startswith(prefix) and f.endswith('.pkl'))
        if snaps:
            return os.path.join(run_root, run, snaps[-1])
    raise click.ClickException(f'no {prefix}*.pkl was written under {run_root}/*{pattern_dir}*.')


def _reused(pkl):
    options = os.path.join(os.path.dirname(os.path.abspath(pkl)), 'training_options.json')
    return f'reused {os.path.abspath(pkl)}' + (f' (training options: {options})' if os.path.isfile(options) else '')


def _metrics(stages, py, pkl, run_dir, plan, data):
    results, options_used = {}, {}
    for names, options in plan:
        cmd = [py, 'calc_metrics.py', f'--network={pkl}', f'--metrics={names}', f'--data={data}',
               f'--run-dir={run_dir}', '--seed=0']
        if options:
            cmd.append('--options=' + json.dumps(options))
        stages.run(cmd)
        for name in names.split(','):
            results.update(read_last_result(run_dir, name, pkl))
            options_used[name] = options or 'defaults'
    return results, options_used


@click.command()
@click.option('--data', help='Built-in dataset', type=click.Choice(sorted(DATA_SETTINGS)), default='dsprites',
              show_default=True)
@click.option('--outdir', help='Where the training runs and metric logs go  [default: runs/idgan_vs_vae, '
              'runs/idgan_vs_vae_shapes3d]')
@click.option('--vae', 'vae_pkl', help='Reuse this β-VAE snapshot instead of training stage 1', metavar='PKL')
@click.option('--gan', 'gan_pkl', help='Reuse this ID-GAN snapshot (trained on --vae) instead of training stage 2',
              metavar='PKL')
@click.option('--vae-kimg', help='Length of the β-VAE run  [default: 20 dSprites, 100 3D Shapes]', type=float)
@click.option('--beta', help='β of the β-VAE  [default: 8 dSprites, 4 3D Shapes]', type=click.FloatRange(min=0))
@click.option('--vae-cfg', help='Stage-1 objective (btcvae: β weighs the total correlation; give --beta)',
              type=click.Choice(sorted(VAE_CFGS)), default='betavae', show_default=True)
@click.option('--nuisance-dim', help='ID-GAN nuisance width  [default: 0 dSprites, 256 3D Shapes]',
              type=click.IntRange(min=0))
@click.option('--gan-kimg', help='Length of the ID-GAN run', type=float, default=20, show_default=True)
@click.option('--distill-weight', help='λ of the ID-GAN run', type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option('--gan-gamma', 'gamma', help='R1 weight of the ID-GAN run  [default: the idgan preset\'s, 10]',
              type=click.FloatRange(min=0))
@click.option('--seed', help='Training seed (metrics use seed 0, as disentanglement_lib)', type=int, default=0,
              show_default=True)
@click.option('--budget-minutes', help='Stated wall-time budget (recorded; a line warns when exceeded)', type=float,
              default=35, show_default=True)
@click.option('--json', 'json_path', help='Result file  [default: docs/results/idgan_vs_vae_<data>.json]')
@click.option('--images', 'images_dir', help='Where the pictures go', default=os.path.join(REPO, 'docs/images'),
              show_default=True)
def main(data, outdir, vae_pkl, gan_pkl, vae_kimg, beta, vae_cfg, nuisance_dim, gan_kimg, distill_weight, gamma,
         seed, budget_minutes, json_path, images_dir):
    """Train (or reuse) a β-VAE and its ID-GAN on dSprites or 3D Shapes, then compare disentanglement and fidelity."""
    settings = DATA_SETTINGS[data]
    if vae_cfg != 'betavae' and beta is None:
        raise click.BadParameter(f'--vae-cfg={vae_cfg} needs --beta (the defaults are the β-VAE\'s).',
                                 param_hint='--beta')
    variant = variant_suffix(vae_cfg, distill_weight, gamma, gan_kimg, seed)
    tag = data + variant   # file names of this variant
    outdir = settings['outdir'] + variant if outdir is None else outdir
    vae_kimg = settings['vae_kimg'] if vae_kimg is None else vae_kimg
    beta = settings['beta'] if beta is None else beta
    nuisance_dim = settings['nuisance_dim'] if nuisance_dim is None else nuisance_dim
    json_path = os.path.join(REPO, f'docs/results/idgan_vs_vae_{tag}.json') if json_path is None else json_path
    for name, path in (('--vae', vae_pkl), ('--gan', gan_pkl)):
        if path is not None and not os.path.isfile(path):
            raise click.BadParameter(f'{path} is not a file; give a snapshot .pkl or leave {name} out to train one.',
                                     param_hint=name)
    if gan_pkl is not None and vae_pkl is None:
        raise click.BadParameter('--gan needs the --vae it was trained on (its encoder-side scores and decoder).',
                                 param_hint='--gan')
    py = sys.executable
    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    stages = _Stages(6, budget_minutes)

    stages.begin(f'stage 1: {VAE_CFGS[vae_cfg]} on {data}, β = {beta:g}, {vae_kimg:g} kimg' + (' (reused)' if vae_pkl else ''))
    if vae_pkl is None:
        stages.run(vae_command(py, outdir, data, beta, vae_kimg, seed, vae_cfg))
        vae_pkl = _newest(outdir, f'-{data}-{vae_cfg}', 'vae-snapshot-')
    else:
        stages.commands.append(_reused(vae_pkl))
    vae_pkl = os.path.abspath(vae_pkl)
    stages.end()

    stages.begin(f'stage 2: ID-GAN on the VAE code, nuisance {nuisance_dim}, {gan_kimg:g} kimg'
                 + (' (reused)' if gan_pkl else ''))
    if gan_pkl is None:
        stages.run(gan_command(py, outdir, data, vae_pkl, gan_kimg, nuisance_dim, seed, distill_weight, gamma))
        gan_pkl = _newest(outdir, f'-{data}-idgan', 'network-snapshot-')
    else:
        stages.commands.append(_reused(gan_pkl))
    gan_pkl = os.path.abspath(gan_pkl)
    stages.end()

    stages.begin('encoder-side disentanglement of the VAE (FactorVAE, MIG, DCI)')
    vae_dir, gan_dir = os.path.join(outdir, 'metrics-vae'), os.path.join(outdir, 'metrics-idgan')
    encoder, encoder_options = _metrics(stages, py, vae_pkl, vae_dir, ENCODER_METRICS, data)
    stages.end()

    stages.begin('generator side and fidelity of the VAE decoder (aggregate-posterior codes)')
    decoder, generator_options = _metrics(stages, py, vae_pkl, vae_dir, GENERATOR_METRICS, data)
    stages.end()

    stages.begin('generator side and fidelity of the ID-GAN generator')
    idgan, _ = _metrics(stages, py, gan_pkl, gan_dir, GENERATOR_METRICS, data)
    stages.end()

    stages.begin('pictures: VAE decoder beside the ID-GAN generator, same codes')
    pictures_dir = os.path.join(outdir, 'compare')
    shutil.rmtree(pictures_dir, ignore_errors=True)
    stages.run([py, 'generate.py', f'--network={gan_pkl}', '--compare-vae', '--traverse', '--seeds=0-1', '--steps=7',
                f'--outdir={pictures_dir}'])
    stages.run([py, 'generate.py', f'--network={gan_pkl}', '--compare-vae', '--seeds=0-11', f'--outdir={pictures_dir}'])
    pictures = []
    for s in (0, 1):
        path = os.path.join(images_dir, f'idgan_vs_vae_traversal_seed{s}_{tag}.png')
        side_by_side([os.path.join(pictures_dir, f'traverse-seed{s:04d}-vae.png'),
                      os.path.join(pictures_dir, f'traverse-seed{s:04d}.png')], path)
        pictures.append(path)
    path = os.path.join(images_dir, f'idgan_vs_vae_samples_{tag}.png')
    side_by_side([os.path.join(pictures_dir, 'compare-vae.png')], path, gap=0)
    pictures.append(path)
    stages.end()

    wall_minutes = (time.time() - stages.start) / 60
    rows = [(f'{VAE_CFGS[vae_cfg]} (encoder; decoder on the aggregate posterior)', {**encoder, **decoder}),
            ('ID-GAN generator on that VAE code', idgan)]
    table = results_table(rows)
    result = dict(
        command='python experiments/idgan_vs_vae.py ' + ' '.join(sys.argv[1:]),
        dataset=data, seed=seed, budget_minutes=budget_minutes, wall_minutes=round(wall_minutes, 1),
        threads=os.environ.get('OMP_NUM_THREADS'), vae_snapshot=vae_pkl, idgan_snapshot=gan_pkl,
        vae_cfg=vae_cfg, vae_kimg=vae_kimg, gan_kimg=gan_kimg, distill_weight=distill_weight, gamma=gamma, beta=beta, nuisance_dim=nuisance_dim,
        vae_encoder=encoder, vae_decoder=decoder, idgan_generator=idgan,
        metric_options=dict(encoder=encoder_options, generator=generator_options),
        stages=stages.log, pictures=[os.path.relpath(p, REPO) for p in pictures], table=table)
    finish(json_path, result, table, wall_minutes, budget_minutes)


if __name__ == '__main__':
    main()
