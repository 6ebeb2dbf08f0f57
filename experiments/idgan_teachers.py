"""β-VAE vs β-TCVAE vs FactorVAE as ID-GAN teachers on dSprites: does a better teacher give a better GAN? Seed 0.

    OMP_NUM_THREADS=1 python experiments/idgan_teachers.py --outdir=runs/idgan_teachers

Question: ID-GAN distils whatever code its VAE has. If the three VAE objectives built for
disentanglement reach codes of different quality on the same budget, does the generator trained on
the better code also score better on the generator side (`mig_gen`, `dci_gen`), and at what
fidelity (`fd_oracle`, `pr_oracle`)?

Stages, each an ordinary command of the project, printed before it runs (experiments/idgan_vs_vae.py
is the model; its helpers are imported from there):

1. three teachers with the same code size, length and seed, each with its preset's default
   hyper-parameter (`training/vae_objectives/`, docs/VAE.md): `--cfg=betavae --beta=8`,
   `--cfg=btcvae --beta=6`, `--cfg=factorvae --gamma=10`, `--code-dim=10 --kimg=<--vae-kimg>`
   (default 100; or reuse snapshots with `--vae=CFG=PKL`);
2. an ID-GAN on each with the demo's CPU widths (`--cfg=idgan --cbase=2048 --cmax=32 --map=2
   --batch=8 --distill-weight=<--distill-weight>`, default 0.1) for `--gan-kimg` (default 10; or reuse with
   `--gan=CFG=PKL`);
3. encoder-side FactorVAE / MIG / DCI of each teacher (the reduced sample sizes of idgan_vs_vae.py);
4. generator-side `mig_gen` (and `dci_gen` unless `--no-dci-gen`) of each VAE decoder (codes from the
   aggregate posterior), and the same plus fidelity `fd_oracle` / `kid_oracle` / `pr_oracle` of each
   ID-GAN generator;
5. per teacher the VAE decoder's traversal beside its ID-GAN's for the same code
   (`generate.py --compare-vae --traverse`), and the three ID-GAN traversals side by side.

Writes docs/results/idgan_teachers_dsprites<suffix>.json atomically (the suffix names each setting that
differs from the defaults, e.g. `_gamma0.1`, so variants do not overwrite each other): numbers, hyper-parameters,
commands, per-stage wall times, the teachers ranked by encoder MIG and by their generators' `mig_gen`; and
prints the results table of docs/RESULTS.md. Budget: about 60 minutes of wall time on a shared
2-core machine at one thread (`--budget-minutes` only states it; a line warns when it is exceeded).
"""

import os
import shutil
import sys
import time

import click

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import experiments.idgan_vs_vae as base  # noqa: E402  (its helpers: stages, metrics, table, pictures)

# (cfg, display name, train.py options): each objective's preset default, stated explicitly.
TEACHERS = [('betavae', 'β-VAE', ('--beta=8',)),
            ('btcvae', 'β-TCVAE', ('--beta=6',)),
            ('factorvae', 'FactorVAE', ('--gamma=10',))]
TEACHER_NAMES = {cfg: name for cfg, name, _ in TEACHERS}


def parse_reuse(values, option):
    """{cfg: absolute path} from repeated `CFG=PKL` values of --vae / --gan; a clear error for anything else."""
    reuse = {}
    for value in values:
        cfg, sep, path = value.partition('=')
        if not sep or cfg not in TEACHER_NAMES:
            raise click.BadParameter(f'{value!r} is not CFG=PKL with CFG one of {", ".join(TEACHER_NAMES)}; '
                                     f'write e.g. {option}=btcvae=runs/x/vae-snapshot-000100.pkl.', param_hint=option)
        if cfg in reuse:
            raise click.BadParameter(f'{cfg} is given twice; give one snapshot per teacher.', param_hint=option)
        if not os.path.isfile(path):
            raise click.BadParameter(f'{path} is not a file; give a snapshot .pkl or leave {cfg} out to train one.',
                                     param_hint=option)
        reuse[cfg] = os.path.abspath(path)
    return reuse


def variant_suffix(distill_weight, gamma, gan_kimg, seed):
    """File-name suffix of a run that differs from the script's defaults: each non-default setting, in a fixed order."""
    return (('' if distill_weight == 0.1 else f'_lambda{distill_weight:g}') + ('' if gamma is None else f'_gamma{gamma:g}')
            + ('' if gan_kimg == 10 else f'_gan{gan_kimg:g}kimg') + ('' if seed == 0 else f'_trainseed{seed}'))


def rank(teachers, key):
    """Teacher cfgs ordered best first by results[key] (higher is better); teachers without the key are left out."""
    scored = [(cfg, results[key]) for cfg, results in teachers.items() if results.get(key) is not None]
    return [cfg for cfg, _ in sorted(scored, key=lambda item: -item[1])]


def ranking(teachers):
    """The teachers ranked by encoder MIG, decoder and ID-GAN mig_gen; do the encoder and ID-GAN orders agree?"""
    by_encoder = rank({cfg: r['encoder'] for cfg, r in teachers.items()}, 'mig')
    by_generator = rank({cfg: r['idgan_generator'] for cfg, r in teachers.items()}, 'mig_gen')
    by_decoder = rank({cfg: r.get('vae_decoder', {}) for cfg, r in teachers.items()}, 'mig_gen')
    return dict(by_encoder_mig=by_encoder, by_vae_decoder_mig_gen=by_decoder, by_idgan_mig_gen=by_generator,
                same_order=by_encoder == by_generator,
                same_best=bool(by_encoder) and bool(by_generator) and by_encoder[0] == by_generator[0])


def table_rows(teachers):
    """[(row name, results)] for results_table: per teacher, its encoder and decoder, then its ID-GAN generator."""
    rows = []
    for cfg, r in teachers.items():
        name = f'{TEACHER_NAMES[cfg]} ({" ".join(r["hyper_params"])})'
        rows += [(f'{name}: encoder; decoder', {**r['encoder'], **r.get('vae_decoder', {})}),
                 (f'{name}: its ID-GAN', r['idgan_generator'])]
    return rows


@click.command()
@click.option('--outdir', help='Where the training runs and metric logs go  [default: runs/idgan_teachers<suffix>]')
@click.option('--vae', 'vae_reuse', help='Reuse this teacher snapshot instead of training it (repeatable)',
              metavar='CFG=PKL', multiple=True)
@click.option('--gan', 'gan_reuse', help='Reuse this ID-GAN snapshot, trained on --vae CFG (repeatable)',
              metavar='CFG=PKL', multiple=True)
@click.option('--vae-kimg', help='Length of every teacher run', type=float, default=100, show_default=True)
@click.option('--gan-kimg', help='Length of every ID-GAN run', type=float, default=10, show_default=True)
@click.option('--gan-gamma', 'gamma', help='R1 weight of the ID-GAN runs  [default: the idgan preset\'s, 10]',
              type=click.FloatRange(min=0))
@click.option('--distill-weight', help='λ of every ID-GAN run', type=click.FloatRange(min=0), default=0.1,
              show_default=True)
@click.option('--dci-gen/--no-dci-gen', help='Also measure dci_gen of the decoders and generators', default=True, show_default=True)
@click.option('--seed', help='Training seed (metrics use seed 0, as disentanglement_lib)', type=int, default=0,
              show_default=True)
@click.option('--budget-minutes', help='Stated wall-time budget (recorded; a line warns when exceeded)', type=float,
              default=60, show_default=True)
@click.option('--json', 'json_path', help='Result file  [default: docs/results/idgan_teachers_dsprites<suffix>.json]')
@click.option('--images', 'images_dir', help='Where the pictures go', default=os.path.join(REPO, 'docs/images'),
              show_default=True)
def main(outdir, vae_reuse, gan_reuse, vae_kimg, gan_kimg, gamma, distill_weight, dci_gen, seed, budget_minutes, json_path,
         images_dir):
    """Train (or reuse) three VAE teachers and an ID-GAN on each on dSprites, then compare them.

    \b
    # everything, seed 0 (about 60 min at one thread):
    OMP_NUM_THREADS=1 python experiments/idgan_teachers.py
    # the measurement pass on snapshots already trained:
    python experiments/idgan_teachers.py --vae=betavae=runs/a/vae-snapshot-000100.pkl --gan=betavae=runs/b/network-snapshot-000010.pkl ...
    """
    vaes, gans = parse_reuse(vae_reuse, '--vae'), parse_reuse(gan_reuse, '--gan')
    for cfg in gans:
        if cfg not in vaes:
            raise click.BadParameter(f'--gan={cfg}=... needs the --vae={cfg}=... it was trained on.', param_hint='--gan')
    py = sys.executable
    variant = variant_suffix(distill_weight, gamma, gan_kimg, seed)
    json_path = json_path or os.path.join(REPO, f'docs/results/idgan_teachers_dsprites{variant}.json')
    outdir = os.path.abspath(outdir or f'runs/idgan_teachers{variant}')
    os.makedirs(outdir, exist_ok=True)
    generator_plan = [(names, options) for names, options in base.GENERATOR_METRICS if dci_gen or names != 'dci_gen']
    decoder_plan = [(names, options) for names, options in generator_plan if names in ('mig_gen', 'dci_gen')]
    stages = base._Stages(5 * len(TEACHERS) + 1, budget_minutes)
    teachers = {cfg: dict(name=name, hyper_params=list(hyper)) for cfg, name, hyper in TEACHERS}

    for cfg, name, hyper in TEACHERS:
        stages.begin(f'teacher {name} ({" ".join(hyper)}), {vae_kimg:g} kimg' + (' (reused)' if cfg in vaes else ''))
        if cfg not in vaes:
            stages.run([py, 'train.py', f'--outdir={outdir}', '--data=dsprites', f'--cfg={cfg}', *hyper, '--code-dim=10',
                        f'--kimg={vae_kimg:g}', '--tick=10', '--snap=5', '--workers=0', f'--seed={seed}'])
            vaes[cfg] = os.path.abspath(base._newest(outdir, f'-dsprites-{cfg}-', 'vae-snapshot-'))
        else:
            stages.commands.append(base._reused(vaes[cfg]))
        teachers[cfg]['vae_snapshot'] = vaes[cfg]
        stages.end()

    for cfg, name, _ in TEACHERS:
        stages.begin(f'ID-GAN on the {name} code, {gan_kimg:g} kimg' + (' (reused)' if cfg in gans else ''))
        if cfg not in gans:
            stages.run([py, 'train.py', f'--outdir={outdir}', '--data=dsprites', '--cfg=idgan', f'--vae={vaes[cfg]}',
                        '--cbase=2048', '--cmax=32', '--map=2', '--batch=8', f'--kimg={gan_kimg:g}', '--tick=1',
                        '--snap=5', f'--distill-weight={distill_weight:g}', '--workers=0', f'--seed={seed}']
                       + ([] if gamma is None else [f'--gamma={gamma:g}']))
            gans[cfg] = os.path.abspath(base._newest(outdir, '-dsprites-idgan-', 'network-snapshot-'))
        else:
            stages.commands.append(base._reused(gans[cfg]))
        teachers[cfg]['idgan_snapshot'] = gans[cfg]
        stages.end()

    options_used = {}
    for cfg, name, _ in TEACHERS:
        stages.begin(f'encoder-side disentanglement of {name} (FactorVAE, MIG, DCI)')
        teachers[cfg]['encoder'], options_used['encoder'] = base._metrics(
            stages, py, vaes[cfg], os.path.join(outdir, f'metrics-{cfg}-vae'), base.ENCODER_METRICS, 'dsprites')
        stages.end()
    for cfg, name, _ in TEACHERS:
        stages.begin(f'generator side of the {name} decoder (aggregate-posterior codes)')
        teachers[cfg]['vae_decoder'], _ = base._metrics(
            stages, py, vaes[cfg], os.path.join(outdir, f'metrics-{cfg}-vae'), decoder_plan, 'dsprites')
        stages.end()
    for cfg, name, _ in TEACHERS:
        stages.begin(f'generator side and fidelity of the ID-GAN on {name}')
        teachers[cfg]['idgan_generator'], options_used['generator'] = base._metrics(
            stages, py, gans[cfg], os.path.join(outdir, f'metrics-{cfg}-idgan'), generator_plan, 'dsprites')
        stages.end()

    stages.begin('pictures: each VAE decoder beside its ID-GAN, and the three ID-GANs side by side')
    pictures, gan_traversals = [], []
    for cfg, _, _ in TEACHERS:
        pictures_dir = os.path.join(outdir, f'compare-{cfg}')
        shutil.rmtree(pictures_dir, ignore_errors=True)
        stages.run([py, 'generate.py', f'--network={gans[cfg]}', '--compare-vae', '--traverse', '--seeds=0',
                    '--steps=7', f'--outdir={pictures_dir}'])
        path = os.path.join(images_dir, f'idgan_teachers_{cfg}_dsprites{variant}.png')
        base.side_by_side([os.path.join(pictures_dir, 'traverse-seed0000-vae.png'),
                      os.path.join(pictures_dir, 'traverse-seed0000.png')], path)
        pictures.append(path)
        gan_traversals.append(os.path.join(pictures_dir, 'traverse-seed0000.png'))
    path = os.path.join(images_dir, f'idgan_teachers_gan_traversals_dsprites{variant}.png')
    base.side_by_side(gan_traversals, path, gap=16)
    pictures.append(path)
    stages.end()

    wall_minutes = (time.time() - stages.start) / 60
    table = base.results_table(table_rows(teachers))
    order = ranking(teachers)
    result = dict(
        command='python experiments/idgan_teachers.py ' + ' '.join(sys.argv[1:]),
        dataset='dsprites', seed=seed, budget_minutes=budget_minutes, wall_minutes=round(wall_minutes, 1),
        threads=os.environ.get('OMP_NUM_THREADS'), code_dim=10, vae_kimg=vae_kimg, gan_kimg=gan_kimg, gamma=gamma,
        distill_weight=distill_weight,
        teachers=teachers, ranking=order, metric_options=options_used, stages=stages.log,
        pictures=[os.path.relpath(p, REPO) for p in pictures], table=table, machine=base.machine_record())
    base.write_json_atomic(json_path, base.repo_relative(result))
    print('\n' + table)
    print(f'\nBy encoder MIG: {" > ".join(order["by_encoder_mig"])}; '
          f'by the ID-GAN\'s mig_gen: {" > ".join(order["by_idgan_mig_gen"])}')
    print(f'\nDone in {wall_minutes:.1f} min (budget {budget_minutes:g} min) -> {json_path}')
    if wall_minutes > budget_minutes:
        print(f'warning: the run took longer than the stated budget of {budget_minutes:g} minutes.')


if __name__ == '__main__':
    main()
