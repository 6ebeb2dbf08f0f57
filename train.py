"""Train a GAN (and, with plug-in configurations, its disentangled variants).

Run directories, option names and outputs follow StyleGAN2-ADA.
"""

import json
import os

import click
import torch

import dnnlib
from dnnlib import cli
from dnnlib.cli import FiniteFloatRange, UserError, describe_os_error, os_errors_as_user_errors
from torch_utils.precision import PRECISIONS, resolve_precision
from training import distributed, launch
from training.options import (
    apply_resume,
    check_same_options,
    configure_stylegan2,
    exit_after_signal,
    largest_divisor_at_most,
    make_run_dir,
    parse_metric_flags,
    remove_new_run_dir,
    resolve_auto_resume,
    resolve_resume,
    storage_error,
)

#: Augmentation presets by name (their contents live in training/augment.py).
AUGPIPES = ('blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc')


def _plugin_configs():
    """The plug-in's registry module, or None when the plug-in is not installed.

    Only the plug-in's absence is quiet: an import that fails inside it (a broken plug-in, a
    missing dependency of one method) is reported with its cause, instead of every preset
    vanishing behind "unknown --cfg".
    """
    try:
        from disentangle import configs as plugin_configs  # optional plug-in; training works without it
    except ModuleNotFoundError as err:
        if err.name == 'disentangle':
            return None
        raise UserError(f'the disentangle/ plug-in cannot be loaded: {err}; install what it needs '
                        f'(pip install -e .) or remove the plug-in.') from None
    except ImportError as err:
        raise UserError(f'the disentangle/ plug-in cannot be loaded: {err}.') from None
    return plugin_configs


def _gan_configs():
    """Configuration presets: the host's, plus those a plug-in registers when it is installed."""
    cfgs = {'stylegan2': configure_stylegan2}
    cfgs.update(getattr(_plugin_configs(), 'CONFIGS', {}))
    return cfgs


def _mapping_choices():
    """--mapping choices: the host's MLP (None: nothing to change), plus those a plug-in registers."""
    choices = {'mlp': None}
    choices.update(getattr(_plugin_configs(), 'MAPPINGS', {}))
    return choices


@click.command(cls=cli.Command, context_settings=dict(show_default=True))
@click.option('--outdir', help='Where to save the results', metavar='DIR', required=True)
@click.option('--data', help='Training data: a zip or folder of images, or a built-in name (dsprites, shapes3d, digits)',
              metavar='PATH', required=True)
@click.option('--cfg', help='Method and its recommended hyper-parameters', metavar='NAME', default='stylegan2')
@click.option('--gpus', help='Number of processes (GPUs, or CPU processes with gloo)', type=click.IntRange(min=1), default=1)
@click.option('--batch', help='Total batch size [default: by --cfg]', type=click.IntRange(min=1))
@click.option('--batch-gpu', help='Batch per process and accumulation round [default: batch/gpus]', type=click.IntRange(min=1))
@click.option('--kimg', help='Training duration in thousands of images', type=FiniteFloatRange(min=0, min_open=True), default=25000)
@click.option('--gamma', help='R1 regularisation weight; with --cfg=factorvae the total-correlation weight [default: by --cfg]',
              type=FiniteFloatRange(min=0))
@click.option('--snap', help='Snapshot interval in ticks', type=click.IntRange(min=1), default=50)
@click.option('--tick', help='Progress-line interval in kimg', type=FiniteFloatRange(min=0, min_open=True), default=4)
@click.option('--seed', help='Random seed', type=click.IntRange(min=0), default=0)
@click.option('--aug', help='Augmentation mode', type=click.Choice(['ada', 'noaug', 'fixed']), default='ada')
@click.option('--p', help='Augmentation probability for --aug=fixed', type=FiniteFloatRange(min=0, max=1))
@click.option('--target', help='ADA target value for --aug=ada', type=FiniteFloatRange(min=0, max=1), default=0.6)
@click.option('--augpipe', help='Augmentation pipeline', type=click.Choice(AUGPIPES), default='bgc')
@click.option('--mirror', help='Enable dataset x-flips', type=bool, default=False, metavar='BOOL')
@click.option('--cond', help='Train a conditional model on the dataset labels', type=bool, default=False, metavar='BOOL')
@click.option('--resume', help='Resume from a network snapshot, continue a run directory in place, or auto '
              '(the newest run of these options in --outdir, else a new run)', metavar='PKL|DIR|auto')
@click.option('--precision', help='Arithmetic precision (auto = bf16 on CPUs with AMX/AVX-512 BF16)',
              type=click.Choice(PRECISIONS), default='auto')
@click.option('--tf32', help='TF32 matmuls and convolutions on CUDA (faster on Ampere/Hopper, ~1e-3 relative error; '
                             'off as in StyleGAN2-ADA)', type=bool, default=False, metavar='BOOL')
@click.option('--compile', 'torch_compile', help='torch.compile G\'s synthesis network and D for the main phases '
              '(regularisation phases stay eager; opt-in: break-even on CPU, docs/PERFORMANCE.md; unmeasured on GPU)',
              type=bool, default=False, metavar='BOOL')
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@click.option('--workers', help='DataLoader worker processes', type=click.IntRange(min=0), default=2)
@click.option('--metrics', help='Metrics to evaluate at each snapshot, comma-separated, or "none"', default='none')
@click.option('--metric-options', help='JSON object of metric options (sample sizes etc.) for --metrics, as calc_metrics.py '
              '--options', metavar='JSON')
@click.option('--cbase', help='Capacity multiplier (channels = cbase / resolution) [default: by --cfg]', type=click.IntRange(min=1))
@click.option('--cmax', help='Max. feature maps [default: by --cfg]', type=click.IntRange(min=1))
@click.option('--map', help='Mapping network depth', type=click.IntRange(min=1), default=2)
@click.option('--glr', help='G learning rate [default: by --cfg]', type=FiniteFloatRange(min=0, min_open=True))
@click.option('--dlr', help='D learning rate [default: by --cfg]', type=FiniteFloatRange(min=0, min_open=True))
@click.option('--code-dim', help='VAE configs: code dimensions [default: 10]', type=click.IntRange(min=1))
@click.option('--beta', help='VAE configs: KL weight (betavae) or total-correlation weight (btcvae) [default: by --cfg]',
              type=FiniteFloatRange(min=0))
@click.option('--tc-estimator', help='btcvae: minibatch estimator of the total correlation (docs/VAE.md) [default: mws]',
              type=click.Choice(['mws', 'mss']))
@click.option('--recon', help='VAE configs: decoder likelihood (auto = bernoulli for 1 channel, gaussian for colour)',
              type=click.Choice(['auto', 'bernoulli', 'gaussian']), default='auto')
@click.option('--lr', help='VAE configs: learning rate [default: 1e-3; official 1e-4]; GAN configs use --glr/--dlr',
              type=FiniteFloatRange(min=0, min_open=True))
@click.option('--vae', help='ID-GAN: the stage-1 VAE snapshot whose encoder gives the code', metavar='PKL')
@click.option('--nuisance-dim', help='ID-GAN, InfoGAN: width of the Gaussian nuisance (noise) input [default: 0; InfoGAN 5]',
              type=click.IntRange(min=0))
@click.option('--distill-weight', help='ID-GAN: weight lambda of the distillation term [default: by --cfg]',
              type=FiniteFloatRange(min=0))
@click.option('--distill-warmup', help='ID-GAN: kimg of the linear warm-up of lambda [default: by --cfg]',
              type=FiniteFloatRange(min=0))
# InfoGAN and InfoGAN-CR (disentangle/infogan.py, disentangle/contrastive.py; docs/INFOGAN.md).
@click.option('--cat', help='InfoGAN: categorical codes, category counts comma-separated, e.g. 10 or 10,10 [default: none]',
              metavar='LIST')
@click.option('--cont', help='InfoGAN: continuous U(-1, 1) codes [default: 5]', type=click.IntRange(min=0))
@click.option('--info-weight-cat', help='InfoGAN: weight of the categorical MI term [default: 1]', type=FiniteFloatRange(min=0))
@click.option('--info-weight-cont', help='InfoGAN: weight of the continuous MI term [default: 0.1; infogan-cr 0.05]',
              type=FiniteFloatRange(min=0))
@click.option('--info-std', help='InfoGAN: std of Q for continuous codes [default: fixed]', type=click.Choice(['fixed', 'learned']))
@click.option('--cr-weight', help='InfoGAN-CR: weight alpha of the contrastive term for G [default: 2]',
              type=FiniteFloatRange(min=0))
@click.option('--cr-start-kimg', help='InfoGAN-CR: kimg at which alpha switches on [default: 90% of --kimg]',
              type=FiniteFloatRange(min=0))
@click.option('--cr-gap', help='InfoGAN-CR: contrastive gap schedule GAP[,GAP@KIMG...], e.g. 1.9,0@85 [default: 0]',
              metavar='SCHEDULE')
# Mapping-network choices (StyleGenes: --mapping=genes, registered by the disentangle/ plug-in).
@click.option('--mapping', help='Mapping network: mlp (StyleGAN2), or a plug-in\'s choice such as genes', metavar='NAME',
              default='mlp')
@click.option('--genes', help='--mapping=genes: number of genes N [default: 16]', type=click.IntRange(min=1))
@click.option('--variants', help='--mapping=genes: variants per gene K [default: 32]', type=click.IntRange(min=1))
@click.option('--gene-dim', help='--mapping=genes: width of a variant [default: w_dim / genes, no projection]',
              type=click.IntRange(min=1))
@click.option('--dry-run', help='Print the training options and exit', is_flag=True)
@os_errors_as_user_errors
def main(**kwargs):
    """Train a GAN with the StyleGAN2-ADA recipe, on CPU or GPU.

    \b
    # A CPU-sized StyleGAN2 on the built-in dSprites (tens of images/s on 2 cores):
    python train.py --outdir=runs --data=dsprites --cfg=stylegan2 --cbase=4096 --cmax=128 --map=2 --batch=8 --kimg=2

    \b
    # Full-size StyleGAN2-ADA on your own dataset zip (see dataset_tool.py), two GPUs:
    python train.py --outdir=runs --data=datasets/faces.zip --gpus=2 --mirror=1

    \b
    # Stage 1 of ID-GAN: a beta-VAE on dSprites (also --cfg=btcvae --beta=6, --cfg=factorvae --gamma=10):
    python train.py --outdir=runs --data=dsprites --cfg=betavae --beta=8 --code-dim=10 --kimg=20

    \b
    # Stage 2 of ID-GAN: the VAE's code into a StyleGAN2, distilled with the frozen encoder:
    python train.py --outdir=runs --data=dsprites --cfg=idgan --vae=runs/00000-dsprites-betavae-batch64/vae-snapshot-000020.pkl \\
        --cbase=4096 --cmax=128 --batch=8 --kimg=10

    \b
    # InfoGAN with one 10-way code on the built-in digits; InfoGAN-CR on dSprites (5 codes + 5 noise):
    python train.py --outdir=runs --data=digits --cfg=infogan --cat=10 --cont=2 --cbase=2048 --cmax=32 --batch=16 --kimg=20
    python train.py --outdir=runs --data=dsprites --cfg=infogan-cr --cbase=2048 --cmax=32 --batch=16 --kimg=10
    # StyleGenes: a gene bank (16 genes x 32 variants) instead of the mapping MLP (also with --cfg=idgan):
    python train.py --outdir=runs --data=dsprites --mapping=genes --genes=16 --variants=32 --cbase=4096 --cmax=128 --batch=8 --kimg=2

    \b
    # Continue a run that was stopped, exactly where it left off:
    python train.py --outdir=runs --data=dsprites --resume=runs/00000-dsprites-stylegan2-batch8
    """
    opts = dnnlib.EasyDict(kwargs)
    from training.vae_loop import launch_vae_training, vae_cfgs
    if opts.cfg in vae_cfgs():  # stage 1 of ID-GAN: VAE training has its own loop
        launch_vae_training(opts)
        return
    c = dnnlib.EasyDict()

    cfgs = _gan_configs()
    if opts.cfg not in cfgs:
        raise UserError(f'unknown --cfg={opts.cfg}; choose one of: {", ".join(sorted(list(cfgs) + list(vae_cfgs())))}.')
    device = opts.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = str(torch.device(device))
    except RuntimeError:
        raise UserError(f'--device={opts.device} is not a torch device name (try cpu or cuda).')
    try:
        precision = resolve_precision(opts.precision, device)
    except ValueError as err:
        raise UserError(str(err))
    torchrun = distributed.torchrun_env()  # started by torchrun: one process of WORLD_SIZE
    if torchrun is not None:
        if opts.gpus not in (1, torchrun.world_size):
            raise UserError(f'--gpus={opts.gpus} conflicts with torchrun\'s WORLD_SIZE={torchrun.world_size}; '
                            f'drop --gpus when launching with torchrun.')
        opts.gpus = torchrun.world_size
        distributed.init_torchrun(device)

    # Data.
    from training.dataset import DatasetError, dataset_kwargs
    try:
        c.training_set_kwargs = dataset_kwargs(opts.data, use_labels=opts.cond, xflip=opts.mirror, max_size=None)
        training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    except DatasetError as err:
        raise UserError(str(err))
    res = training_set.resolution
    if res < 4 or res & (res - 1) != 0 or training_set.image_shape[1] != training_set.image_shape[2]:
        raise UserError(f'--data={opts.data} has {training_set.image_shape[1]}x{training_set.image_shape[2]} images; '
                        f'StyleGAN2 needs square power-of-two images (use dataset_tool.py --resolution).')
    if opts.cond and not training_set.has_labels:
        raise UserError(f'--cond=1 needs labels, but {opts.data} has none (dataset.json "labels").')
    c.training_set_kwargs.resolution = res
    c.training_set_kwargs.max_size = len(training_set)
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=device.startswith('cuda'), prefetch_factor=2,
                                           num_workers=opts.workers)

    # Networks, optimisers, loss.
    c.G_kwargs = dnnlib.EasyDict(class_name='networks.stylegan2.Generator', z_dim=512, w_dim=512,
                                 mapping_kwargs=dnnlib.EasyDict(), synthesis_kwargs=dnnlib.EasyDict())
    c.D_kwargs = dnnlib.EasyDict(class_name='networks.stylegan2.Discriminator', block_kwargs=dnnlib.EasyDict(),
                                 mapping_kwargs=dnnlib.EasyDict(), epilogue_kwargs=dnnlib.EasyDict())
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8)
    c.D_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', betas=[0.0, 0.99], eps=1e-8)
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss')
    c.latent_kwargs = None
    c.extra_terms_kwargs = []
    c.num_gpus = opts.gpus
    claimed = {name for fn in cfgs.values() for name in getattr(fn, 'options', ())}
    stray = sorted(name for name in claimed - set(getattr(cfgs[opts.cfg], 'options', ())) if opts.get(name) is not None)
    if stray:
        raise UserError(f'--{stray[0].replace("_", "-")} does not apply to --cfg={opts.cfg}; drop it or pick a --cfg that uses it.')
    vae_only = [name for name in ('beta', 'lr', 'tc_estimator') if opts.get(name) is not None] + (['recon'] if opts.recon != 'auto' else [])
    if vae_only:  # otherwise silently ignored by GAN presets
        raise UserError(f'--{vae_only[0].replace("_", "-")} applies to the VAE configs ({", ".join(sorted(vae_cfgs()))}), not to '
                        f'--cfg={opts.cfg}; drop it.')
    widths = cfgs[opts.cfg](c, opts, training_set)
    _apply_mapping_choice(c, opts, training_set)
    if opts.batch is not None:
        c.batch_size = opts.batch
    if c.batch_size % opts.gpus != 0:
        raise UserError(f'--batch={c.batch_size} must be divisible by --gpus={opts.gpus}.')
    c.batch_gpu = opts.batch_gpu or c.batch_size // opts.gpus
    if (c.batch_size // opts.gpus) % c.batch_gpu != 0:
        raise UserError(f'--batch={c.batch_size} must be a multiple of --gpus x --batch-gpu = {opts.gpus} x {c.batch_gpu}.')
    if c.D_kwargs.epilogue_kwargs.get('mbstd_group_size') and c.batch_gpu % c.D_kwargs.epilogue_kwargs.mbstd_group_size != 0:
        c.D_kwargs.epilogue_kwargs.mbstd_group_size = largest_divisor_at_most(c.batch_gpu, 4)
    cbase = opts.cbase or widths['cbase']
    cmax = opts.cmax or widths['cmax']
    c.G_kwargs.synthesis_kwargs.channel_base = c.D_kwargs.channel_base = cbase
    c.G_kwargs.synthesis_kwargs.channel_max = c.D_kwargs.channel_max = cmax
    if precision == 'fp16':  # StyleGAN2-ADA's mixed precision: fp16 in the 4 top resolutions
        c.G_kwargs.synthesis_kwargs.num_fp16_res = c.D_kwargs.num_fp16_res = 4
        c.G_kwargs.synthesis_kwargs.conv_clamp = c.D_kwargs.conv_clamp = 256
    if opts.glr is not None:
        c.G_opt_kwargs.lr = opts.glr
    if opts.dlr is not None:
        c.D_opt_kwargs.lr = opts.dlr
    if opts.gamma is not None:
        c.loss_kwargs.r1_gamma = opts.gamma

    # Augmentation.
    c.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe')
    if opts.aug == 'noaug':
        c.augment_kwargs = None
        if opts.p is not None:
            raise UserError('--p can only be given with --aug=fixed.')
    else:
        from training.augment import AUGPIPE_SPECS
        c.augment_kwargs.update(AUGPIPE_SPECS[opts.augpipe])
        if opts.aug == 'ada':
            if opts.p is not None:
                raise UserError('--p can only be given with --aug=fixed.')
            c.ada_target = opts.target
        else:
            if opts.p is None:
                raise UserError('--aug=fixed needs --p (the augmentation probability).')
            c.augment_p = opts.p

    # Run length, logging, metrics.
    c.total_kimg = opts.kimg
    c.kimg_per_tick = opts.tick
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.random_seed = opts.seed
    c.precision = precision
    c.allow_tf32 = bool(opts.tf32)
    c.torch_compile = bool(opts.torch_compile)
    c.device = device
    c.metrics, c.metric_kwargs = parse_metric_flags(opts)

    # Resume.
    resume_pkl, resume_dir = resolve_resume(opts.resume)
    if resume_pkl is not None:
        apply_resume(c, resume_pkl, training_set)

    # Run directory.
    desc = f'{training_set.name}-{opts.cfg}'
    if opts.mapping != 'mlp':
        desc += f'-{opts.mapping}'
    if opts.cond:
        desc += '-cond'
    if opts.mirror:
        desc += '-mirror'
    desc += f'-batch{c.batch_size}'
    if opts.resume == 'auto':
        resume_dir = resolve_auto_resume(opts.outdir, desc, c, training_set)
    if resume_dir is not None:
        c.run_dir = resume_dir
        check_same_options(c, resume_dir)
    else:
        c.run_dir = distributed.agree_on(None if torchrun and torchrun.rank != 0 else
                                         make_run_dir(opts.outdir, desc, opts.dry_run), torchrun)

    print()
    print('Training options:')
    print(json.dumps(c, indent=2, default=str))
    print()
    print(f'Output directory:    {c.run_dir}')
    print(f'Training data:       {opts.data} ({len(training_set)} images, {res}x{res}x{training_set.num_channels})')
    print(f'Training duration:   {c.total_kimg} kimg')
    print(f'Number of processes: {c.num_gpus}')
    print(f'Device, precision:   {c.device}, {c.precision}' + (', TF32 on' if c.allow_tf32 else '') +
          (', torch.compile' if c.torch_compile else ''))
    print()
    if opts.dry_run:
        print('Dry run; exiting.')
        return

    if torchrun is None or torchrun.rank == 0:
        # A continued run records its new length (the other options were checked to be the same).
        from torch_utils.misc import atomic_write_bytes
        try:
            atomic_write_bytes(os.path.join(c.run_dir, 'training_options.json'),
                               json.dumps(c, indent=2, default=str).encode('utf-8'))
        except OSError as err:
            remove_new_run_dir(c.run_dir, resume_dir)
            raise UserError(describe_os_error(err))

    print('Launching processes...')
    from training.training_loop import ResumeMismatch, TrainingDiverged
    try:
        stopped_by = launch.launch_training(c)
    except TrainingDiverged as err:
        raise UserError(str(err))
    except ResumeMismatch as err:
        remove_new_run_dir(c.run_dir, resume_dir)
        raise UserError(f'--resume: {err}')
    except OSError as err:  # a full disk or a read-only place, at a snapshot, a grid or a log line
        raise storage_error(err, c.run_dir)
    if stopped_by is not None:
        exit_after_signal(stopped_by, c.run_dir)


def _apply_mapping_choice(c, opts, training_set):
    """--mapping: a registered function edits `c` after the --cfg preset; its options need it."""
    mappings = _mapping_choices()
    if opts.mapping not in mappings:
        raise UserError(f'unknown --mapping={opts.mapping}; choose one of: {", ".join(sorted(mappings))}.')
    own = getattr(mappings[opts.mapping], 'options', ())
    claimed = {name for fn in mappings.values() for name in getattr(fn, 'options', ())}
    stray = sorted(name for name in claimed - set(own) if opts.get(name) is not None)
    if stray:
        owner = next(key for key, fn in mappings.items() if stray[0] in getattr(fn, 'options', ()))
        raise UserError(f'--{stray[0].replace("_", "-")} does not apply to --mapping={opts.mapping}; add '
                        f'--mapping={owner} or drop it.')
    if mappings[opts.mapping] is not None:
        mappings[opts.mapping](c, opts, training_set)


if __name__ == '__main__':
    main()
