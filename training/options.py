"""What train.py and the plug-in presets share: the StyleGAN2 preset, run directories, resume rules.

A library module, so that `disentangle/` and `training/vae_loop.py` configure runs without importing
the command-line script (`python train.py` would otherwise load a second copy of it as `train`).
Every mistake raises `UserError` (dnnlib/cli.py): one sentence, exit status 1, nothing written.
"""

import json
import os
import re

import torch

import dnnlib
from dnnlib.cli import UserError, describe_os_error

__all__ = ['UserError', 'configure_stylegan2', 'parse_metric_flags', 'make_run_dir', 'resolve_resume',
           'resolve_auto_resume', 'trained_kimg', 'apply_resume', 'check_resume_fits', 'network_mismatch',
           'CONTINUE_MAY_CHANGE', 'differing_options', 'check_same_options', 'exit_after_signal',
           'remove_new_run_dir', 'storage_error', 'largest_divisor_at_most']


def configure_stylegan2(c, opts, training_set):
    """StyleGAN2-ADA's `auto` rule: batch, gamma, EMA and width follow the resolution."""
    res = training_set.resolution
    gpus = opts.gpus
    batch = opts.batch or max(min(gpus * min(4096 // res, 32), 64), gpus)
    c.batch_size = batch
    c.G_kwargs.mapping_kwargs.num_layers = opts.map
    c.D_kwargs.epilogue_kwargs.mbstd_group_size = min(batch // gpus, 4)
    lr = 0.002 if res >= 1024 else 0.0025
    c.G_opt_kwargs.lr = c.D_opt_kwargs.lr = lr
    c.loss_kwargs.r1_gamma = opts.gamma if opts.gamma is not None else 0.0002 * (res ** 2) / batch
    c.ema_kimg = batch * 10 / 32
    c.ema_rampup = 0.05
    return dict(cbase=int((1 if res >= 512 else 0.5) * 32768), cmax=512)


def parse_metric_flags(opts):
    """(metric names, metric options) of --metrics / --metric-options, checked before training starts."""
    if (opts.get('metrics') or 'none').strip().lower() in ('', 'none') and not opts.get('metric_options'):
        return [], {}   # the usual case: no need to import the metrics package
    try:
        from metrics import metric_main
        from metrics.ground_truth import MetricError
    except ImportError:
        raise UserError('--metrics needs the metrics package, which is not installed; use --metrics=none.')
    try:
        names = metric_main.parse_metric_names(opts.metrics)
        return names, metric_main.parse_metric_options(opts.get('metric_options'), names, flag='--metric-options')
    except MetricError as err:
        raise UserError(str(err))


def make_run_dir(outdir, desc, dry_run):
    prev = []
    if os.path.isdir(outdir):
        prev = [x for x in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, x))]
    ids = [int(m.group()) for m in (re.match(r'^\d+', x) for x in prev) if m is not None]
    run_id = max(ids, default=-1) + 1
    run_dir = os.path.join(outdir, f'{run_id:05d}-{desc}')
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise UserError(f'--outdir={outdir} is a file; give a directory for the run directories.')
    if not dry_run:
        try:
            os.makedirs(run_dir, exist_ok=False)
        except OSError as err:
            raise UserError(f'cannot create the run directory {run_dir} ({err.strerror}); choose another --outdir.')
    return run_dir


def resolve_resume(resume):
    """A snapshot path, or a run directory (its newest complete snapshot; training continues in it).

    `auto` is resolved later, once the run description is known (see resolve_auto_resume).
    """
    if resume is None or resume == 'auto':
        return None, None
    if os.path.isdir(resume):
        from training.fault import newest_complete_snapshot
        snap = newest_complete_snapshot(resume)
        if snap is None:
            raise UserError(f'--resume={resume} is a directory without a complete network-snapshot-*.pkl file.')
        return snap, resume
    if not (os.path.isfile(resume) or dnnlib.util.is_url(resume)):
        raise UserError(f'--resume={resume} does not exist; give a network-snapshot-*.pkl, a run directory or auto.')
    return resume, None


def resolve_auto_resume(outdir, desc, c, training_set):
    """--resume=auto: the newest run of the same description in --outdir, or (None, None) for a new run."""
    from training.fault import find_run_to_continue
    resume_pkl, resume_dir = find_run_to_continue(outdir, desc)
    if resume_pkl is None:
        print(f'--resume=auto: no run "NNNNN-{desc}" with a complete snapshot in {outdir}; starting a new run.')
        return None
    trained = trained_kimg(resume_pkl)
    if trained is not None and trained == c.total_kimg:  # a job script run again after the end
        print(f'--resume=auto: {resume_dir} has already trained its {trained:g} kimg; nothing to do.')
        raise SystemExit(0)
    print(f'--resume=auto: continuing {resume_dir} from {os.path.basename(resume_pkl)}.')
    apply_resume(c, resume_pkl, training_set)
    return resume_dir


def trained_kimg(snapshot_pkl):
    """kimg trained by the run that wrote `snapshot_pkl` (None for a snapshot without resume state)."""
    from training.snapshot import SnapshotError, load_network_pkl
    try:
        state = load_network_pkl(snapshot_pkl).get('resume_state')
    except SnapshotError:
        return None  # reported by the caller's own load
    return state['cur_nimg'] / 1000 if state is not None else None


def apply_resume(c, resume_pkl, training_set):
    exact = check_resume_fits(c, resume_pkl, training_set)
    c.resume_pkl = resume_pkl
    if not exact:
        c.ema_rampup = None  # as StyleGAN2-ADA when starting from foreign weights: no EMA ramp-up


def check_resume_fits(c, resume_pkl, training_set):
    """Whether the snapshot carries exact resume state; refuses a snapshot these options cannot continue."""
    from training.snapshot import SnapshotError, load_network_pkl
    try:
        data = load_network_pkl(resume_pkl)
    except SnapshotError as err:
        raise UserError(f'--resume: {err}')
    G = data.get('G_ema')
    state = data.get('resume_state')
    if G is None:
        raise UserError(f'--resume={resume_pkl} is not a network snapshot (no G_ema inside).')
    if (G.img_resolution, G.img_channels) != (training_set.resolution, training_set.num_channels):
        raise UserError(f'--resume={resume_pkl} was trained at {G.img_resolution}x{G.img_resolution} with '
                        f'{G.img_channels} channel(s) but the data is {training_set.resolution}x'
                        f'{training_set.resolution} with {training_set.num_channels}; resume from a matching snapshot.')
    if state is not None and state.get('cur_nimg', 0) >= c.total_kimg * 1000:
        trained = state['cur_nimg'] / 1000
        raise UserError(f'--resume={resume_pkl} has already trained {trained:g} kimg and --kimg={c.total_kimg:g} asks '
                        f'for no more; give a --kimg above {trained:g} to continue it.')
    mismatch = network_mismatch(c, data, G, training_set)
    if mismatch is not None:
        raise UserError(f'--resume={resume_pkl} does not fit these options: {mismatch}; pass the options it was '
                        f'trained with (--cbase, --cmax, --map, --cfg, ...).')
    return state is not None


def network_mismatch(c, data, G, training_set):
    """A phrase naming a parameter whose shape differs between the snapshot and what `c` builds, or None.

    The networks are built on the CPU (a second or two at full size; the random state is restored).
    A plug-in network that cannot be built here is left to the training loop's own check.
    """
    from training.training_loop import shape_mismatch
    common = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                  img_channels=training_set.num_channels)
    for key, kwargs in (('G_ema', dnnlib.EasyDict(c.G_kwargs, z_dim=G.z_dim)), ('D', c.D_kwargs)):
        if data.get(key) is None:
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                built = dnnlib.util.construct_class_by_name(**kwargs, **common)
        except Exception:  # noqa: BLE001  (only a pre-check: the loop checks again on the real modules)
            continue
        mismatch = shape_mismatch(data[key], built, exact=data.get('resume_state') is not None)
        if mismatch is not None:
            return f'{key}.{mismatch}'
    return None


# Training options that may change when a run directory is continued: how long and how often to
# report, and where or how fast it runs. Any other difference would silently train another model.
CONTINUE_MAY_CHANGE = ('total_kimg', 'kimg_per_tick', 'image_snapshot_ticks', 'network_snapshot_ticks', 'metrics',
                       'metric_kwargs', 'data_loader_kwargs', 'device', 'precision', 'allow_tf32', 'torch_compile',
                       'num_gpus', 'batch_gpu', 'run_dir', 'resume_pkl')


def differing_options(c, run_dir):
    """'batch_size 8 -> 4, ...' for the options that differ from the run's training_options.json."""
    path = os.path.join(run_dir, 'training_options.json')
    try:
        with open(path) as f:
            before = json.load(f)
    except (OSError, ValueError):
        return None  # nothing to compare with (an older or hand-made run directory)
    now = json.loads(json.dumps(c, default=str))
    differences = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) & set(b)):  # a key only one side knows is a code change, not an option
                walk(a[key], b[key], f'{where}.{key}' if where else key)
        elif a != b:
            differences.append(f'{where} {json.dumps(a)} -> {json.dumps(b)}')

    walk({k: v for k, v in before.items() if k not in CONTINUE_MAY_CHANGE},
         {k: v for k, v in now.items() if k not in CONTINUE_MAY_CHANGE}, '')
    return differences


def check_same_options(c, run_dir):
    differences = differing_options(c, run_dir)
    if differences:
        shown = ', '.join(differences[:3]) + (f' and {len(differences) - 3} more' if len(differences) > 3 else '')
        raise UserError(f'--resume={run_dir} was trained with other options ({shown}); continue it with the options '
                        f'it was trained with, or start a new run from its snapshot with --resume={c.resume_pkl}.')


def exit_after_signal(signum, run_dir, prefix=None):
    import signal

    from training.fault import newest_complete_snapshot
    final = newest_complete_snapshot(run_dir) if prefix is None else newest_complete_snapshot(run_dir, prefix=prefix)
    print(f'Stopped by {signal.Signals(signum).name}; the final snapshot is {final}. '
          f'Continue with --resume={run_dir} (or --resume=auto).', flush=True)
    raise SystemExit(128 + signum)


def remove_new_run_dir(run_dir, resume_dir):
    """Remove the run directory this command created, when training could not even start in it."""
    import shutil
    if resume_dir is None and os.path.isdir(run_dir) and \
            not any(name.endswith('.pkl') for name in os.listdir(run_dir)):
        shutil.rmtree(run_dir, ignore_errors=True)


def storage_error(err, run_dir, prefix=None):
    """The UserError for a write that failed during training, naming the snapshot to continue from."""
    from training.fault import newest_complete_snapshot
    last = newest_complete_snapshot(run_dir) if prefix is None else newest_complete_snapshot(run_dir, prefix=prefix)
    why = describe_os_error(err).split('; ')[0].rstrip('.')
    return UserError(f'training stopped: {why}; ' + (f'the last complete snapshot is {last} (continue with '
                                                     f'--resume={run_dir}).' if last else 'no snapshot was written.'))


def largest_divisor_at_most(n, limit):
    return max(d for d in range(1, limit + 1) if n % d == 0)
