"""Stage 1 of ID-GAN: train a VAE (beta-VAE, beta-TCVAE, FactorVAE, ... see training/vae_objectives/).

The conventions of the GAN loop (training/training_loop.py): progress in kimg, one tick line every
`kimg_per_tick`, `stats.jsonl`, `log.txt`, atomic snapshots with exact resume state (optimiser
moments, counters, position in the data stream, RNG states) and the same NaN/Inf guard. Outputs:

    reals.png                     the fixed images the grids below reconstruct
    recon<kimg>.png               rows alternate: real images, their reconstructions (posterior mean)
    traversal<kimg>.png           row d: code dimension d swept over [-3, 3] (columns), the other
                                  dimensions at the posterior mean of one real image; grey lines
                                  between the tiles
    vae-snapshot-<kimg:06d>.pkl   dict: E, Dec, the objective's modules (FactorVAE: D_tc),
                                  vae_kwargs, training_set_kwargs, resume_state

The decoder is stored as `Dec` (one short key like E, G, D, Q; `D` would read as a discriminator).
Single process only: a VAE of this size trains at hundreds of images/s on a CPU.
"""

import copy
import json
import os
import time

import numpy as np
import psutil
import torch

import dnnlib
from dnnlib.progress import format_time
from torch_utils import misc, training_stats
from torch_utils.precision import autocast_dtype, resolve_precision
from training import vae_objectives
from training.loss import autocast_context
from training import fault
from training.snapshot import load_network_pkl
from training.training_loop import (
    JsonLines,
    TrainingDiverged,
    _collate,
    _SkipSampler,
    list_snapshots,
    save_image_grid,
    snapshot_modules,
)
from training.vae_objectives.base import reparameterize

SNAPSHOT_PREFIX = 'vae-snapshot-'
TRAVERSAL_SPACING = 2          # grey lines between traversal tiles: a sprite's travel inside its tile shows
TRAVERSAL_RANGE = 3.0          # traversals sweep the prior's +-3 standard deviations
TRAVERSAL_STEPS = 11
GRID_COLUMNS = 16
GRID_PAIRS = 4                 # recon grids: 4 pairs of rows (real, reconstruction)


def vae_cfgs():
    """The --cfg names this module trains."""
    return vae_objectives.names()


def vae_precision(precision, device):
    """Resolve --precision for VAE training: fp32 or bf16 autocast (fp16 needs loss scaling we skip)."""
    resolved = resolve_precision(precision, device)
    if resolved == 'fp16':
        if precision == 'fp16':
            raise ValueError('VAE training supports --precision=fp32 or bf16 (fp16 would need loss scaling); '
                             'use --precision=bf16 or auto.')
        cuda_bf16 = torch.device(device).type == 'cuda' and torch.cuda.is_bf16_supported()
        resolved = 'bf16' if cuda_bf16 else 'fp32'
    return resolved


# ----------------------------------------------------------------------------------------------
# Grids.

def _fixed_images(training_set, count, seed=0):
    rnd = np.random.RandomState(seed)
    indices = rnd.choice(len(training_set), size=count, replace=len(training_set) < count)
    return np.stack([training_set[int(i)][0] for i in indices])


@torch.no_grad()
def encode_mean(E, images, amp_dtype=None, batch=64):
    """Posterior means [N, code_dim] (fp32) of images in [-1, 1] (the representation used by metrics)."""
    codes = []
    for chunk in images.split(batch):
        with autocast_context(chunk.device, amp_dtype):
            mu, _logvar = E(chunk)
        codes.append(mu.float())
    return torch.cat(codes)


@torch.no_grad()
def decode_images(Dec, codes, amp_dtype=None, batch=64):
    """Mean images in [-1, 1] (fp32) for codes [N, code_dim]."""
    images = []
    for chunk in codes.split(batch):
        with autocast_context(chunk.device, amp_dtype):
            logits = Dec(chunk)
        images.append(Dec.to_image(logits))
    return torch.cat(images)


def reconstruction_grid(E, Dec, reals, amp_dtype=None):
    """[2 * GRID_PAIRS * GRID_COLUMNS, C, H, W] in [-1, 1]: rows of reals, each followed by its reconstructions."""
    recon = decode_images(Dec, encode_mean(E, reals, amp_dtype), amp_dtype)
    rows = []
    for pair in range(reals.shape[0] // GRID_COLUMNS):
        cols = slice(pair * GRID_COLUMNS, (pair + 1) * GRID_COLUMNS)
        rows += [reals[cols].float(), recon[cols]]
    return torch.cat(rows).cpu().numpy()


def traversal_grid(E, Dec, image, amp_dtype=None, value_range=TRAVERSAL_RANGE, steps=TRAVERSAL_STEPS):
    """[code_dim * steps, C, H, W] in [-1, 1]: row d sweeps dimension d from -range to +range."""
    base = encode_mean(E, image[None], amp_dtype)[0]
    values = torch.linspace(-value_range, value_range, steps, device=base.device)
    codes = base.repeat(E.code_dim, steps, 1)                       # [dim, step, code]
    dims = torch.arange(E.code_dim, device=base.device)
    codes[dims, :, dims] = values
    return decode_images(Dec, codes.reshape(-1, E.code_dim), amp_dtype).cpu().numpy()


def _all_finite(module):
    return all(bool(torch.isfinite(t).all()) for t in misc.params_and_buffers(module))


# ----------------------------------------------------------------------------------------------

def vae_training_loop(
    run_dir='.',                    # Output directory.
    training_set_kwargs={},         # Options for the training set.
    data_loader_kwargs={},          # Options for torch.utils.data.DataLoader.
    E_kwargs={},                    # Options for the encoder (class_name, code_dim).
    Dec_kwargs={},                  # Options for the decoder (class_name, code_dim).
    objective_kwargs={},            # Options for the objective (class_name, hyper-parameters, recon).
    opt_kwargs={},                  # Options for the VAE optimiser (encoder + decoder).
    random_seed=0,
    batch_size=64,
    total_kimg=20,
    kimg_per_tick=4,
    image_snapshot_ticks=50,
    network_snapshot_ticks=50,
    resume_pkl=None,                # VAE snapshot to resume from (exactly, if it carries resume_state).
    metrics=(),                     # Metric names to evaluate at each network snapshot.
    metric_kwargs={},               # Metric options (sample sizes etc.), as calc_metrics.py --options.
    precision='fp32',               # 'fp32' | 'bf16' (resolved, see vae_precision()).
    device='cpu',
    abort_fn=None,                  # Callable that returns True to stop training early.
    progress_fn=None,               # Callable(cur_kimg, total_kimg).
    verbose=True,
):
    start_time = time.time()
    device = torch.device(device)
    np.random.seed(random_seed)
    torch.manual_seed(random_seed)
    amp_dtype = autocast_dtype(precision)
    log = print if verbose else (lambda *args, **kwargs: None)

    log('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    log(f'Num images: {len(training_set)}, image shape: {training_set.image_shape}')

    log('Constructing networks...')
    common_kwargs = dict(img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    E = dnnlib.util.construct_class_by_name(**E_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    Dec = dnnlib.util.construct_class_by_name(**Dec_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    objective = dnnlib.util.construct_class_by_name(**objective_kwargs, code_dim=E.code_dim,
                                                    dataset_size=len(training_set), device=device)
    objective_modules = objective.modules()
    vae_params = list(E.parameters()) + list(Dec.parameters())
    opt = dnnlib.util.construct_class_by_name(params=vae_params, **opt_kwargs)

    cur_nimg, cur_tick, batch_idx = 0, 0, 0
    resume_state = None
    if resume_pkl is not None:
        log(f'Resuming from "{resume_pkl}"')
        resume_data = load_network_pkl(resume_pkl, what='VAE snapshot')  # checked: whole, checksum, weights-only .pt
        for name, module in [('E', E), ('Dec', Dec)] + list(objective_modules.items()):
            if resume_data.get(name) is not None:
                misc.copy_params_and_buffers(resume_data[name], module, require_all=True)
        resume_state = resume_data.get('resume_state')
        if resume_state is not None:
            opt.load_state_dict(resume_state['opt'])
            objective.load_state_dict(resume_state['objective'])
            cur_nimg = resume_state['cur_nimg']
            cur_tick = resume_state['cur_tick']
            batch_idx = resume_state['batch_idx']
        del resume_data

    if verbose:
        x = torch.zeros([2, E.img_channels, E.img_resolution, E.img_resolution], device=device)
        mu, _logvar = misc.print_module_summary(E, [x])
        misc.print_module_summary(Dec, [mu])

    # Data, continuing the index stream where a resumed run left it.
    sampler = misc.InfiniteSampler(dataset=training_set, seed=random_seed)
    sampler = _SkipSampler(sampler, skip=batch_idx * batch_size)
    data_loader_kwargs = dict(data_loader_kwargs)
    if data_loader_kwargs.get('num_workers', 0) == 0:
        data_loader_kwargs.pop('prefetch_factor', None)
    training_set_iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler,
                                                             batch_size=batch_size, collate_fn=_collate,
                                                             **data_loader_kwargs))

    log('Exporting sample images...')
    grid_reals = _fixed_images(training_set, GRID_PAIRS * GRID_COLUMNS, seed=random_seed)
    save_image_grid(grid_reals, os.path.join(run_dir, 'reals.png'), drange=[0, 255],
                    grid_size=(GRID_COLUMNS, GRID_PAIRS))
    grid_reals = torch.from_numpy(grid_reals).to(device).to(torch.float32) / 127.5 - 1

    def save_grids(suffix):
        save_image_grid(reconstruction_grid(E, Dec, grid_reals, amp_dtype), os.path.join(run_dir, f'recon{suffix}.png'),
                        drange=[-1, 1], grid_size=(GRID_COLUMNS, 2 * GRID_PAIRS))
        save_image_grid(traversal_grid(E, Dec, grid_reals[0], amp_dtype), os.path.join(run_dir, f'traversal{suffix}.png'),
                        drange=[-1, 1], grid_size=(TRAVERSAL_STEPS, E.code_dim), spacing=TRAVERSAL_SPACING)

    if resume_state is None:
        save_grids('_init')

    stats_collector = training_stats.Collector(regex='.*')
    stats_jsonl = JsonLines(os.path.join(run_dir, 'stats.jsonl'))

    # Restore the RNG states last: everything above may have consumed random numbers.
    if resume_state is not None and resume_state.get('rng') is not None:
        misc.set_rng_state(resume_state['rng'])

    log(f'Training for {total_kimg} kimg...')
    log()
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    last_snapshot_pkl = None
    if progress_fn is not None:
        progress_fn(0, total_kimg)
    done = cur_nimg >= total_kimg * 1000

    while not done:
        images, _labels = next(training_set_iterator)
        x = images.to(device).to(torch.float32) / 127.5 - 1

        E.requires_grad_(True)
        Dec.requires_grad_(True)
        with autocast_context(device, amp_dtype):
            mu, logvar = E(x)
        code = reparameterize(mu, logvar)       # fp32; the noise comes from the global (resumable) RNG
        with autocast_context(device, amp_dtype):
            logits = Dec(code)
        loss, stats = objective.loss(x, logits, mu, logvar, code)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        E.requires_grad_(False)
        Dec.requires_grad_(False)
        for p in vae_params:
            if p.grad is not None:  # an isolated non-finite gradient must not poison Adam's moments
                torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()
        objective.after_vae_step(code.detach())

        training_stats.report('Loss/VAE/loss', loss.detach())
        for name, value in stats.items():
            if name == 'kl_dims':
                for dim in range(value.shape[1]):
                    training_stats.report(f'VAE/kl_dim/{dim:02d}', value[:, dim])
            else:
                training_stats.report(f'Loss/VAE/{name}', value)

        cur_nimg += batch_size
        batch_idx += 1
        done = cur_nimg >= total_kimg * 1000
        stop_requested = abort_fn is not None and bool(abort_fn())  # SIGTERM/SIGINT: final snapshot now
        if not done and not stop_requested and cur_tick != 0 and cur_nimg < tick_start_nimg + kimg_per_tick * 1000:
            continue
        # Maintenance must not shift the training RNG streams (exact resume).
        training_rng = misc.get_rng_state()

        tick_end_time = time.time()
        sec_per_kimg = (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3
        eta = (total_kimg * 1000 - cur_nimg) / 1e3 * sec_per_kimg
        fields = [f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}"]
        fields += [f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.1f}"]
        fields += [f"time {format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<9s}"]
        fields += [f"sec/tick {training_stats.report0('Timing/sec_per_tick', tick_end_time - tick_start_time):<6.1f}"]
        fields += [f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', sec_per_kimg):<6.2f}"]
        fields += [f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<5.1f}"]
        fields += [f"cpumem {training_stats.report0('Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30):<5.2f}"]
        stats_collector.update()
        stats_dict = stats_collector.as_dict()
        for name in ('loss', 'recon', 'kl', 'tc'):
            if f'Loss/VAE/{name}' in stats_dict:
                fields += [f"{name} {stats_dict[f'Loss/VAE/{name}'].mean:<8.2f}"]
        kl_dims = [stats_dict[name].mean for name in sorted(stats_dict) if name.startswith('VAE/kl_dim/')]
        if kl_dims:
            fields += [f"active {sum(kl > 0.1 for kl in kl_dims)}/{len(kl_dims)}"]
        fields += [f"eta {format_time(eta) if not done else '-'}"]
        log(' '.join(fields), flush=True)

        if (not done) and stop_requested:
            done = True
            log()
            log('Aborting...')

        bad = [name for name, value in stats_dict.items()
               if name.startswith('Loss/') and value.num > 0 and not np.isfinite(value.mean)]
        if bad or not _all_finite(E) or not _all_finite(Dec):
            what = ', '.join(bad) if bad else 'a network weight'
            last = f'the last good snapshot is {last_snapshot_pkl}' if last_snapshot_pkl else 'no snapshot was written yet'
            raise TrainingDiverged(f'VAE training diverged at kimg {cur_nimg / 1e3:.1f} ({what} is NaN/Inf); {last}. '
                                   f'Try --precision=fp32 or a smaller --lr.')

        if done or cur_tick % image_snapshot_ticks == 0:
            # Named after the snapshot of this kimg, so several grids within one kimg never overwrite.
            save_grids(os.path.basename(fault.snapshot_path(run_dir, 'recon', cur_nimg, ext='.png'))[len('recon'):-4])

        if done or cur_tick % network_snapshot_ticks == 0:
            snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs),
                                 vae_kwargs=dict(E_kwargs=dict(E_kwargs), Dec_kwargs=dict(Dec_kwargs),
                                                 objective_kwargs=dict(objective_kwargs), opt_kwargs=dict(opt_kwargs),
                                                 batch_size=batch_size, precision=precision))
            snapshot_data.update(snapshot_modules(dict(E=E, Dec=Dec, **objective_modules)))
            snapshot_data['resume_state'] = dict(
                opt=copy.deepcopy(opt.state_dict()), objective=copy.deepcopy(objective.state_dict()),
                cur_nimg=cur_nimg, cur_tick=cur_tick + 1, batch_idx=batch_idx, rng=training_rng,
                batch_size=batch_size)
            last_snapshot_pkl = fault.snapshot_path(run_dir, SNAPSHOT_PREFIX, cur_nimg)
            misc.atomic_pickle_dump(snapshot_data, last_snapshot_pkl)
            if metrics:
                log('Evaluating metrics...')
                from metrics import metric_main  # a sibling room, imported only when asked for
                for metric in metrics:
                    result_dict = metric_main.calc_metric(metric=metric, network_pkl=last_snapshot_pkl, run_dir=run_dir,
                                                          snapshot_data=snapshot_data,
                                                          dataset_kwargs=training_set_kwargs, device=device,
                                                          **metric_kwargs)
                    metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=last_snapshot_pkl)
            del snapshot_data
        misc.set_rng_state(training_rng)

        stats_jsonl.write(dict(stats_dict, timestamp=time.time()))
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time

    stats_jsonl.close()
    log()
    log('Exiting...')
    return last_snapshot_pkl


# ----------------------------------------------------------------------------------------------
# The train.py entry point for --cfg=betavae|btcvae|factorvae|...

# ID-GAN's code_dim and batch; lr 10x the official 1e-4 because CPU runs are ~1% of its schedule (docs/VAE.md).
VAE_DEFAULTS = dnnlib.EasyDict(code_dim=10, batch=64, lr=1e-3)


def _resolve_vae_resume(resume, host):
    """Like train.py's resume rule, for VAE snapshots: a run directory means its newest vae-snapshot."""
    if resume is not None and os.path.isdir(resume):
        snaps = list_snapshots(resume, prefix=SNAPSHOT_PREFIX)
        if not snaps:
            raise host.UserError(f'--resume={resume} is a directory without {SNAPSHOT_PREFIX}*.pkl files.')
        return snaps[-1], resume
    return host.resolve_resume(resume)


def launch_vae_training(opts):
    """Configure and run VAE training from train.py's parsed options (an EasyDict of its click options)."""
    from training import options as host  # the presets' shared helpers and error type
    from networks.vae import VAEConfigError, conv_channels
    from training.dataset import DatasetError, dataset_kwargs
    from training.vae_snapshot import VAESnapshotError, check_vae_snapshot_fits, load_vae_snapshot

    objective_cls = vae_objectives.get(opts.cfg)
    for name in ('beta', 'gamma', 'tc_estimator'):
        if opts.get(name) is not None and name not in objective_cls.hyper_params:
            uses = ', '.join(f'--{key}'.replace('_', '-') for key in objective_cls.hyper_params) or 'no weight option'
            raise host.UserError(f'--{name.replace("_", "-")} does not apply to --cfg={opts.cfg} (it uses {uses}).')
    if opts.gpus != 1:
        raise host.UserError(f'--cfg={opts.cfg} trains in one process; drop --gpus={opts.gpus}.')
    device = opts.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = str(torch.device(device))
    except RuntimeError:
        raise host.UserError(f'--device={opts.device} is not a torch device name (try cpu or cuda).')
    try:
        precision = vae_precision(opts.precision, device)
    except ValueError as err:
        raise host.UserError(str(err))

    c = dnnlib.EasyDict()
    try:
        c.training_set_kwargs = dataset_kwargs(opts.data, use_labels=False, xflip=opts.mirror, max_size=None)
        training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    except DatasetError as err:
        raise host.UserError(str(err))
    res, channels = training_set.resolution, training_set.num_channels
    if training_set.image_shape[1] != training_set.image_shape[2]:
        raise host.UserError(f'--data={opts.data} has {training_set.image_shape[1]}x{training_set.image_shape[2]} '
                             f'images; the VAE needs square images (use dataset_tool.py --resolution).')
    try:
        conv_channels(res)
    except VAEConfigError as err:
        raise host.UserError(f'--data={opts.data}: {err}')
    c.training_set_kwargs.resolution = res
    c.training_set_kwargs.max_size = len(training_set)
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=device.startswith('cuda'), prefetch_factor=2,
                                           num_workers=opts.workers)

    recon = opts.get('recon') or 'auto'
    if recon == 'auto':  # binary-looking grey data gets Bernoulli, colour gets the Gaussian (docs/VAE.md)
        recon = 'bernoulli' if channels == 1 else 'gaussian'
    code_dim = opts.get('code_dim') or VAE_DEFAULTS.code_dim
    c.E_kwargs = dnnlib.EasyDict(class_name='networks.vae.Encoder', code_dim=code_dim)
    c.Dec_kwargs = dnnlib.EasyDict(class_name='networks.vae.Decoder', code_dim=code_dim)
    c.objective_kwargs = dnnlib.EasyDict(class_name=vae_objectives.class_name(opts.cfg), recon=recon)
    for name, default in objective_cls.hyper_params.items():
        c.objective_kwargs[name] = opts[name] if opts.get(name) is not None else default
    c.opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=opts.get('lr') or VAE_DEFAULTS.lr,
                                   betas=[0.9, 0.999], eps=1e-8)
    c.batch_size = opts.batch or VAE_DEFAULTS.batch
    c.total_kimg = opts.kimg
    c.kimg_per_tick = opts.tick
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.random_seed = opts.seed
    c.precision = precision
    c.device = device
    c.metrics, c.metric_kwargs = host.parse_metric_flags(opts)

    resume_pkl, resume_dir = _resolve_vae_resume(opts.resume, host)
    if resume_pkl is not None:
        try:
            resume_data = load_vae_snapshot(resume_pkl)
            check_vae_snapshot_fits(resume_data, resolution=res, num_channels=channels,
                                    code_dim=code_dim, exact_resolution=True, what=f'--data={opts.data}',
                                    path=resume_pkl)
        except VAESnapshotError as err:
            raise host.UserError(f'--resume: {err}')
        trained = (resume_data.get('resume_state') or {}).get('cur_nimg', 0) / 1000
        if trained and trained * 1000 >= c.total_kimg * 1000:
            raise host.UserError(f'--resume={resume_pkl} has already trained {trained:g} kimg and --kimg='
                                 f'{c.total_kimg:g} asks for no more; give a --kimg above {trained:g} to continue it.')
        c.resume_pkl = resume_pkl

    desc = f'{training_set.name}-{opts.cfg}' + ('-mirror' if opts.mirror else '') + f'-batch{c.batch_size}'
    c.run_dir = resume_dir if resume_dir is not None else host.make_run_dir(opts.outdir, desc, opts.dry_run)
    if resume_dir is not None:
        host.check_same_options(c, resume_dir)

    print()
    print('Training options:')
    print(json.dumps(c, indent=2, default=str))
    print()
    print(f'Output directory:    {c.run_dir}')
    print(f'Training data:       {opts.data} ({len(training_set)} images, {res}x{res}x{channels})')
    print(f'Objective:           {opts.cfg}, code_dim {code_dim}, {recon} decoder')
    print(f'Training duration:   {c.total_kimg} kimg')
    print(f'Device, precision:   {c.device}, {c.precision}')
    print()
    if opts.dry_run:
        print('Dry run; exiting.')
        return None

    # A continued run records its new length (the other options were checked to be the same).
    misc.atomic_write_bytes(os.path.join(c.run_dir, 'training_options.json'), json.dumps(c, indent=2, default=str).encode())
    from training import fault
    stop = fault.StopRequest().install()
    with dnnlib.util.Logger(file_name=os.path.join(c.run_dir, 'log.txt'), file_mode='a', should_flush=True):
        try:
            result = vae_training_loop(**c, abort_fn=stop)
        except TrainingDiverged as err:
            raise host.UserError(str(err))
        except OSError as err:  # a full disk or a read-only place
            raise host.storage_error(err, c.run_dir, prefix=SNAPSHOT_PREFIX)
        finally:
            stop.restore()
    if stop.signum is not None:
        host.exit_after_signal(stop.signum, c.run_dir, prefix=SNAPSHOT_PREFIX)
    return result
