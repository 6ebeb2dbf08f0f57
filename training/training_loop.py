"""The GAN training loop: a straight line from set-up to the last snapshot.

Conventions of StyleGAN2-ADA (ticks, kimg, EMA with ramp-up, lazy regularisation, `fakes*.png`,
`network-snapshot-*.pkl`, `stats.jsonl`, `log.txt`), plus what its loop lacks:

- exact resume: every snapshot carries `resume_state` (optimiser moments, kimg/tick counters,
  batch index, adaptive-augmentation state, loss state such as the path-length mean, and the
  RNG states), so a run killed at any time continues the same curve from its last snapshot;
- a pluggable latent sampler and pluggable loss terms (docs/ARCHITECTURE.md), constructed by
  class name: this module knows no method by name;
- a NaN/Inf guard: training stops with a clear message and the last good snapshot untouched.
"""

import copy
import json
import os
import time

import numpy as np
import PIL.Image
import psutil
import torch

import dnnlib
from torch_utils import misc, training_stats
from torch_utils.precision import autocast_dtype, set_tf32
from training import distributed, fault
from training.global_batch import GlobalBatchSampling
from training.latent import split_latents
from training.loss import autocast_context
from training.snapshot import load_network_pkl


class TrainingDiverged(RuntimeError):
    """Raised when a loss or a weight becomes NaN/Inf."""


class ResumeMismatch(ValueError):
    """The snapshot to resume from has other network shapes than these options build."""


def shape_mismatch(source, target, exact=False):
    """None if every parameter and buffer the two modules share has one shape, else a phrase naming one.

    copy_params_and_buffers copies by name; a snapshot of other widths (--cbase, --cmax, ...) would
    otherwise fail deep inside it. `exact` (resuming the optimiser state too): the parameters must
    also be the same set, as the optimiser's moments belong to them one by one.
    """
    theirs = dict(misc.named_params_and_buffers(source))
    if exact:
        ours = {name for name, _ in source.named_parameters()}
        here = {name for name, _ in target.named_parameters()}
        if ours != here:
            name = sorted(ours ^ here)[0]
            return f'{name} is {"in the snapshot but not here" if name in ours else "here but not in the snapshot"}'
    for name, tensor in misc.named_params_and_buffers(target):
        if name in theirs and tuple(theirs[name].shape) != tuple(tensor.shape):
            return f'{name} is {list(theirs[name].shape)} in the snapshot but {list(tensor.shape)} here'
    return None


class JsonLines:
    """stats.jsonl: one JSON object per line, created at the first line (a run that fails before its
    first tick leaves no empty file), and never a half-written line (a failed write is undone)."""

    def __init__(self, path):
        self.path = path
        self.file = None

    def write(self, obj):
        line = (json.dumps(obj) + '\n').encode('utf-8')
        if self.file is None:
            self.file = open(self.path, 'ab', buffering=0)  # noqa: SIM115  (closed by close())
        start = os.fstat(self.file.fileno()).st_size
        try:
            written = 0
            while written < len(line):  # unbuffered: a short write returns its count
                written += self.file.write(line[written:])
        except OSError as err:
            try:
                os.ftruncate(self.file.fileno(), start)
            except OSError:
                pass
            raise OSError(err.errno, err.strerror, self.path) from err

    def close(self):
        if self.file is not None:
            self.file.close()


# ----------------------------------------------------------------------------------------------
# Image grids.

def setup_snapshot_image_grid(training_set, random_seed=0, max_width=16, max_height=12):
    """A grid of real images (grouped by label when there are labels) for reals.png."""
    res = training_set.image_shape[2]
    gw = int(np.clip(1024 // res, 4, max_width))
    gh = int(np.clip(768 // res, 4, max_height))
    rnd = np.random.RandomState(random_seed)
    indices = rnd.permutation(len(training_set))[:gw * gh]
    if len(indices) < gw * gh:
        indices = np.resize(indices, gw * gh)
    images, labels = zip(*[training_set[int(i)] for i in indices])
    return (gw, gh), np.stack(images), np.stack(labels)


def save_image_grid(img, fname, drange, grid_size, spacing=0, spacing_value=96):
    """img: [N, C, H, W] float in drange (or uint8 with drange [0, 255]); written atomically.

    Tiles abut, as in StyleGAN2-ADA's grids, unless `spacing` > 0: then `spacing`-pixel lines of grey
    `spacing_value` separate them, so that where an object sits inside its tile stays visible.
    """
    lo, hi = drange
    img = np.asarray(img, dtype=np.float32)
    img = (img - lo) * (255 / (hi - lo))
    img = np.rint(img).clip(0, 255).astype(np.uint8)
    gw, gh = grid_size
    _N, C, H, W = img.shape
    spacing = int(spacing)
    if spacing < 0:
        raise ValueError(f'grid spacing must be non-negative, got {spacing}.')
    # Pad every tile on its right and bottom, then cut the padding off the grid's last column and row.
    img = np.pad(img.reshape(gh, gw, C, H, W), [(0, 0)] * 3 + [(0, spacing)] * 2, constant_values=spacing_value)
    H, W = H + spacing, W + spacing
    img = img.transpose(0, 3, 1, 4, 2).reshape(gh * H, gw * W, C)[:gh * H - spacing, :gw * W - spacing]
    image = PIL.Image.fromarray(img[:, :, 0], 'L') if C == 1 else PIL.Image.fromarray(img, 'RGB')
    tmp = f'{fname}.tmp{os.getpid()}.png'
    image.save(tmp)
    os.replace(tmp, fname)


# ----------------------------------------------------------------------------------------------
# Snapshots.

def snapshot_modules(named_modules):
    """Deep copies on the CPU, in eval mode without gradients, as StyleGAN2-ADA stores them."""
    out = {}
    for name, module in named_modules.items():
        if module is not None:
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        out[name] = module
    return out


def list_snapshots(run_dir, prefix='network-snapshot-'):
    """Snapshot files of a run directory, oldest first."""
    if not os.path.isdir(run_dir):
        return []
    names = sorted(f for f in os.listdir(run_dir) if f.startswith(prefix) and f.endswith('.pkl'))
    return [os.path.join(run_dir, f) for f in names]


# ----------------------------------------------------------------------------------------------

class _SkipSampler(torch.utils.data.Sampler):
    """Continues an index stream after `skip` items, so a resumed run sees the same data order."""

    def __init__(self, sampler, skip):
        self.sampler = sampler
        self.skip = int(skip)

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it)
        return it


def _collate(batch):
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    labels = torch.from_numpy(np.stack([b[1] for b in batch]))
    return images, labels


def ema_beta(batch_size, ema_kimg, ema_rampup, cur_nimg):
    """Decay of the generator EMA per step: a half-life of ema_kimg thousand images, shortened
    to cur_nimg * ema_rampup early in training so G_ema is not dominated by the random init."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema, G, beta):
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers (w_avg, noise) copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def _all_finite(module):
    return all(bool(torch.isfinite(t).all()) for t in misc.params_and_buffers(module))


def training_loop(
    run_dir='.',                    # Output directory.
    training_set_kwargs={},         # Options for the training set.
    data_loader_kwargs={},          # Options for torch.utils.data.DataLoader.
    G_kwargs={},                    # Options for the generator.
    D_kwargs={},                    # Options for the discriminator.
    G_opt_kwargs={},                # Options for the generator optimiser.
    D_opt_kwargs={},                # Options for the discriminator optimiser.
    augment_kwargs=None,            # Options for the augmentation pipeline; None = no augmentation.
    loss_kwargs={},                 # Options for the loss.
    latent_kwargs=None,             # Options for the latent sampler; None = N(0, I) of G's z_dim.
    extra_terms_kwargs=(),          # Options for each pluggable loss term.
    metrics=(),                     # Metric names to evaluate at each network snapshot.
    metric_kwargs={},               # Metric options (sample sizes etc.), as calc_metrics.py --options.
    random_seed=0,
    num_gpus=1,
    rank=0,
    batch_size=4,                   # Total batch over all processes.
    batch_gpu=4,                    # Batch per process and accumulation round.
    ema_kimg=10,                    # Half-life of the generator EMA in kimg.
    ema_rampup=0.05,                # EMA ramp-up coefficient; None = no ramp-up.
    G_reg_interval=4,               # Lazy path-length interval; None = no lazy regularisation.
    D_reg_interval=16,              # Lazy R1 interval; None = no lazy regularisation.
    augment_p=0,                    # Initial augmentation probability.
    ada_target=None,                # ADA target for sign(D(real)); None = fixed p.
    ada_interval=4,                 # Steps between p adjustments.
    ada_kimg=500,                   # kimg for p to move from 0 to 1.
    total_kimg=25000,
    kimg_per_tick=4,
    image_snapshot_ticks=50,
    network_snapshot_ticks=50,
    resume_pkl=None,                # Snapshot to resume from (exactly, if it carries resume_state).
    precision='fp32',               # 'fp32' | 'bf16' | 'fp16' (resolved, see torch_utils/precision.py).
    allow_tf32=False,               # TF32 matmuls/convolutions on CUDA (off, as StyleGAN2-ADA).
    torch_compile=False,            # torch.compile G.synthesis and D for the main phases (loss.py).
    device='cpu',
    abort_fn=None,                  # Callable that returns True to stop training early.
    progress_fn=None,               # Callable(cur_kimg, total_kimg).
):
    start_time = time.time()
    device = torch.device(device)
    # The same seed on every rank while the networks are built (N processes start from the weights
    # of one); per-rank streams for noise and augmentation are seeded after the broadcast below.
    np.random.seed(random_seed)
    torch.manual_seed(random_seed)
    torch.backends.cudnn.benchmark = True
    set_tf32(allow_tf32)
    amp_dtype = autocast_dtype(precision)  # fp16 lives inside the networks (num_fp16_res), bf16 is autocast

    # Training data.
    if rank == 0:
        print('Loading training set...')
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    if rank == 0:
        print(f'Num images: {len(training_set)}, image shape: {training_set.image_shape}, '
              f'label shape: {training_set.label_shape}')

    # Latent sampler (may look at the data, e.g. to build a posterior bank).
    if latent_kwargs is None:
        latent_kwargs = dnnlib.EasyDict(class_name='training.latent.GaussianLatent', z_dim=G_kwargs.get('z_dim', 512))
    latent_sampler = dnnlib.util.construct_class_by_name(**latent_kwargs)
    if hasattr(latent_sampler, 'prepare'):
        latent_sampler.prepare(training_set=training_set, device=device)
    latent_sampler = latent_sampler.to(device)

    # Networks.
    if rank == 0:
        print('Constructing networks...')
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                         img_channels=training_set.num_channels)
    G_kwargs = dnnlib.EasyDict(G_kwargs, z_dim=latent_sampler.z_dim)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    augment_pipe = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))
    ada = None
    if augment_pipe is not None and ada_target is not None:
        from training.augment import AdaptiveP
        ada = AdaptiveP(target=ada_target, interval=ada_interval, kimg=ada_kimg)

    # Loss terms from plug-ins, then the loss.
    extra_terms = [dnnlib.util.construct_class_by_name(**kw, G=G, D=D, latent_sampler=latent_sampler,
                                                       training_set=training_set, device=device)
                   for kw in extra_terms_kwargs]
    term_modules = {}
    for term in extra_terms:
        for name, module in term.modules().items():
            assert name not in term_modules and name not in ('G', 'D', 'G_ema', 'augment_pipe', 'latent')
            term_modules[name] = module
    loss = dnnlib.util.construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe,
                                               latent_sampler=latent_sampler, extra_terms=extra_terms,
                                               amp_dtype=amp_dtype, **loss_kwargs)
    if ada is not None:
        loss.on_real_logits = ada.accumulate
    if torch_compile:
        if not hasattr(loss, 'compile_main_phases'):
            raise ValueError(f'torch_compile=True needs a loss with compile_main_phases(); {type(loss).__name__} has none.')
        if rank == 0:
            print('Compiling G.synthesis and D for Gmain/Dmain (torch.compile; the first steps take longer)...')
        loss.compile_main_phases()

    # Optimisers, with lazy regularisation folded into lr and betas (StyleGAN2 appendix B).
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                                   ('D', D, D_opt_kwargs, D_reg_interval)]:
        params = list(module.parameters())
        for term in extra_terms:
            params += list(term.extra_parameters(name))
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(params=params, **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1)]
        else:
            mb_ratio = reg_interval / (reg_interval + 1)
            opt_kwargs = dnnlib.EasyDict(opt_kwargs)
            opt_kwargs.lr = opt_kwargs.lr * mb_ratio
            opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
            opt = dnnlib.util.construct_class_by_name(params=params, **opt_kwargs)
            phases += [dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1)]
            phases += [dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval)]
    optimizers = {'G': phases[0].opt, 'D': phases[-1].opt}

    # Summaries on a copy of G: their forward pass in training mode would move w_avg, and the start
    # would then depend on batch_gpu (N processes must start where one does).
    if rank == 0:
        z = latent_sampler.sample(batch_gpu, device=device).z
        c = torch.zeros([batch_gpu, G.c_dim], device=device)
        img = misc.print_module_summary(copy.deepcopy(G), [z, c])
        misc.print_module_summary(D, [img, c])

    # Resume: weights always; the rest of the state when the snapshot has it.
    cur_nimg, cur_tick, batch_idx = 0, 0, 0
    time_offset = 0.0  # seconds trained before this process (a resumed run)
    resume_state = None
    if resume_pkl is not None:
        if rank == 0:
            print(f'Resuming from "{resume_pkl}"')
        resume_data = load_network_pkl(resume_pkl)  # a .pt export gives weights without running code
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe),
                             ('latent', latent_sampler)] + list(term_modules.items()):
            if module is not None and resume_data.get(name) is not None:
                mismatch = shape_mismatch(resume_data[name], module, exact=resume_data.get('resume_state') is not None)
                if mismatch is not None:
                    raise ResumeMismatch(f'{resume_pkl} does not fit these options: {name}.{mismatch}; pass the '
                                         f'options it was trained with (--cbase, --cmax, --map, --cfg, ...).')
                misc.copy_params_and_buffers(resume_data[name], module, require_all=False)
        resume_state = resume_data.get('resume_state')
        if resume_state is not None:
            for key, opt in optimizers.items():
                opt.load_state_dict(resume_state['optimizers'][key])
            cur_nimg = resume_state['cur_nimg']
            cur_tick = resume_state['cur_tick']
            batch_idx = resume_state['batch_idx']
            time_offset = float(resume_state.get('total_sec', 0.0))  # log.txt's time column continues
            loss.load_state_dict(resume_state['loss'])
            if ada is not None and resume_state.get('ada') is not None:
                ada.load_state_dict(resume_state['ada'])
        del resume_data

    # Every process starts from rank 0's weights (each was seeded differently above).
    if num_gpus > 1:
        for module in [G, D, G_ema, augment_pipe, latent_sampler] + list(term_modules.values()):
            if module is not None:
                for tensor in misc.params_and_buffers(module):
                    torch.distributed.broadcast(tensor, src=0)
        np.random.seed(random_seed * num_gpus + rank)
        torch.manual_seed(random_seed * num_gpus + rank)


    # Latents and generator labels: every rank draws the global batch from one shared stream and
    # keeps its slice, so N processes train on exactly the batches of one (docs/DISTRIBUTED.md).
    sampling = GlobalBatchSampling(batch_size, num_gpus, rank, random_seed, device,
                                   state=resume_state.get('sampling') if resume_state is not None else None)

    # Data loader, continuing the index stream where a resumed run left it.
    sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    sampler = _SkipSampler(sampler, skip=batch_idx * (batch_size // num_gpus))
    data_loader_kwargs = dict(data_loader_kwargs)
    if data_loader_kwargs.get('num_workers', 0) == 0:
        data_loader_kwargs.pop('prefetch_factor', None)
    training_set_iterator = iter(torch.utils.data.DataLoader(
        dataset=training_set, sampler=sampler, batch_size=batch_size // num_gpus, collate_fn=_collate,
        **data_loader_kwargs))

    # Image grids.
    grid_size = grid_latents = grid_c = None
    if rank == 0:
        print('Exporting sample images...')
        grid_size, images, labels = setup_snapshot_image_grid(training_set=training_set)
        save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_gen = torch.Generator(device=device).manual_seed(random_seed)
        grid_latents = latent_sampler.sample(labels.shape[0], device=device, generator=grid_gen)
        grid_latents = split_latents(grid_latents, batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)
        if resume_state is None:
            save_image_grid(_render_grid(G_ema, grid_latents, grid_c, amp_dtype),
                            os.path.join(run_dir, 'fakes_init.png'), drange=[-1, 1], grid_size=grid_size)

    # Logs.
    if rank == 0:
        print('Initializing logs...')
    stats_collector = training_stats.Collector(regex='.*')
    stats_metrics = dict()
    stats_jsonl = None
    stats_tfevents = None
    if rank == 0:
        stats_jsonl = JsonLines(os.path.join(run_dir, 'stats.jsonl'))
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError:
            pass

    # Restore the RNG states last: everything above may have consumed random numbers.
    if resume_state is not None and resume_state.get('rng') is not None:
        misc.set_rng_state(distributed.rank_rng_state(resume_state, rank, num_gpus))

    if rank == 0:
        print(f'Training for {total_kimg} kimg...')
        print()
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    last_snapshot_pkl = None
    if progress_fn is not None:
        progress_fn(0, total_kimg)
    done = cur_nimg >= total_kimg * 1000

    while not done:
        # Fetch training data.
        with torch.autograd.profiler.record_function('data_fetch'):
            phase_real_img, phase_real_c = next(training_set_iterator)
            # non_blocking: from the DataLoader's pinned memory a blocking copy would wait for the GPU
            # to finish the previous step before queueing this one.
            phase_real_img = phase_real_img.to(device, non_blocking=True).to(torch.float32)
            phase_real_img = (phase_real_img / 127.5 - 1).split(batch_gpu)
            phase_real_c = phase_real_c.to(device, non_blocking=True).split(batch_gpu)
            all_latents, all_gen_c = sampling.draw(latent_sampler, training_set, len(phases))
            all_latents = [split_latents(phase_latents, batch_gpu) for phase_latents in all_latents]
            all_gen_c = torch.from_numpy(np.stack(all_gen_c)).pin_memory() if device.type == 'cuda' \
                else torch.from_numpy(np.stack(all_gen_c))
            all_gen_c = all_gen_c.to(device, non_blocking=True)
            all_gen_c = [phase_gen_c.split(batch_gpu) for phase_gen_c in all_gen_c.split(batch_size // num_gpus)]

        # Execute the training phases.
        for phase, phase_latents, phase_gen_c in zip(phases, all_latents, all_gen_c):
            if batch_idx % phase.interval != 0:
                continue
            phase.opt.zero_grad(set_to_none=True)
            phase.module.requires_grad_(True)
            for real_img, real_c, latents, gen_c in zip(phase_real_img, phase_real_c, phase_latents, phase_gen_c):
                loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_latents=latents,
                                          gen_c=gen_c, gain=phase.interval, cur_nimg=cur_nimg)
            phase.module.requires_grad_(False)
            with torch.autograd.profiler.record_function(phase.name + '_opt'):
                params = [p for group in phase.opt.param_groups for p in group['params'] if p.grad is not None]
                if num_gpus > 1 and len(params) > 0:
                    flat = torch.cat([p.grad.flatten() for p in params])
                    torch.distributed.all_reduce(flat)
                    flat /= num_gpus
                    offset = 0
                    for p in params:
                        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
                        offset += p.numel()
                for p in params:
                    # As StyleGAN2-ADA: an occasional non-finite gradient (fp16 overflow) must not
                    # poison Adam's moments; persistent divergence is caught by the tick guard.
                    torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
                phase.opt.step()

        # Running statistics (w_avg, ...) of each rank's slice become those of the global batch.
        distributed.average_buffers(dict(G=G, D=D, **term_modules), num_gpus)

        # Update G_ema.
        with torch.autograd.profiler.record_function('Gema'):
            update_ema(G_ema, G, ema_beta(batch_size, ema_kimg, ema_rampup, cur_nimg))

        # Update state.
        cur_nimg += batch_size
        batch_idx += 1

        # Adapt the augmentation probability (AdaptiveP acts every ada_interval calls).
        if ada is not None:
            ada.update(augment_pipe, batch_size)

        # Perform maintenance tasks once per tick, or now when asked to stop (a final snapshot follows).
        done = cur_nimg >= total_kimg * 1000
        tick_due = done or cur_tick == 0 or cur_nimg >= tick_start_nimg + kimg_per_tick * 1000
        stop_requested = fault.poll_abort(abort_fn, num_gpus, device, batch_idx=batch_idx, at_tick=tick_due)
        if not tick_due and not stop_requested:
            continue
        # Maintenance (grids, snapshots, metrics) must not shift the training RNG streams, or a
        # resumed run would diverge from an uninterrupted one.
        training_rng = misc.get_rng_state()

        # Print status line, accumulating the same information in training_stats.
        tick_end_time = time.time()
        fields = []
        fields += [f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}"]
        fields += [f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.1f}"]
        total_sec = tick_end_time - start_time + time_offset
        fields += [f"time {dnnlib.util.format_time(training_stats.report0('Timing/total_sec', total_sec)):<12s}"]
        fields += [f"sec/tick {training_stats.report0('Timing/sec_per_tick', tick_end_time - tick_start_time):<7.1f}"]
        fields += [f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', (tick_end_time - tick_start_time) / max(cur_nimg - tick_start_nimg, 1) * 1e3):<7.2f}"]
        fields += [f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}"]
        fields += [f"cpumem {training_stats.report0('Resources/cpu_mem_gb', psutil.Process(os.getpid()).memory_info().rss / 2**30):<6.2f}"]
        if device.type == 'cuda':
            fields += [f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(device) / 2**30):<6.2f}"]
            torch.cuda.reset_peak_memory_stats()
        fields += [f"augment {training_stats.report0('Progress/augment', float(augment_pipe.p.cpu()) if augment_pipe is not None else 0):.3f}"]
        training_stats.report0('Timing/total_hours', total_sec / (60 * 60))
        training_stats.report0('Timing/total_days', total_sec / (24 * 60 * 60))
        if rank == 0:
            print(' '.join(fields), flush=True)

        # Check for abort.
        if (not done) and stop_requested:
            done = True
            if rank == 0:
                print()
                print('Aborting...')

        # Collect statistics; stop on divergence before anything is written.
        stats_collector.update()
        # Only statistics this run reported (others in the process, e.g. an earlier run, read num=0).
        stats_dict = dnnlib.EasyDict({name: value for name, value in stats_collector.as_dict().items() if value.num > 0})
        bad = [name for name, value in stats_dict.items() if name.startswith('Loss/') and not np.isfinite(value.mean)]
        if bad or not _all_finite(G) or not _all_finite(D):
            what = ', '.join(bad) if bad else 'a network weight'
            last = f'the last good snapshot is {last_snapshot_pkl}' if last_snapshot_pkl else 'no snapshot was written yet'
            raise TrainingDiverged(f'Training diverged at kimg {cur_nimg / 1e3:.1f} ({what} is NaN/Inf); {last}. '
                                   f'Try --precision=fp32, a larger --gamma or a smaller learning rate.')

        # Save image snapshot.
        if rank == 0 and (done or cur_tick % image_snapshot_ticks == 0):
            images = _render_grid(G_ema, grid_latents, grid_c, amp_dtype)
            save_image_grid(images, fault.snapshot_path(run_dir, 'fakes', cur_nimg, ext='.png'), drange=[-1, 1],
                            grid_size=grid_size)

        # Save network snapshot.
        snapshot_pkl = None
        snapshot_data = None
        if done or cur_tick % network_snapshot_ticks == 0:
            snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
            snapshot_data.update(snapshot_modules(dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                                                       latent=latent_sampler, **term_modules)))
            snapshot_data['resume_state'] = dict(
                optimizers={key: copy.deepcopy(opt.state_dict()) for key, opt in optimizers.items()},
                cur_nimg=cur_nimg, cur_tick=cur_tick + 1, batch_idx=batch_idx,
                loss=loss.state_dict(), ada=ada.state_dict() if ada is not None else None,
                rng=training_rng, rank_rng=distributed.gather_objects(training_rng, num_gpus),
                sampling=sampling.state_dict(), num_gpus=num_gpus, batch_size=batch_size, total_sec=total_sec)
            snapshot_pkl = fault.snapshot_path(run_dir, 'network-snapshot-', cur_nimg) if rank == 0 else None
            snapshot_pkl = distributed.agree_on_object(snapshot_pkl, num_gpus)
            if rank == 0:
                misc.atomic_pickle_dump(snapshot_data, snapshot_pkl)
                last_snapshot_pkl = snapshot_pkl

        # Evaluate metrics.
        if snapshot_data is not None and len(metrics) > 0:
            if rank == 0:
                print('Evaluating metrics...')
            from metrics import metric_main  # metrics/ is a sibling room, imported only when asked for
            for metric in metrics:
                result_dict = metric_main.calc_metric(metric=metric, network_pkl=snapshot_pkl, run_dir=run_dir,
                                                      snapshot_data=snapshot_data, dataset_kwargs=training_set_kwargs,
                                                      num_gpus=num_gpus, rank=rank, device=device, **metric_kwargs)
                if rank == 0:
                    metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                stats_metrics.update(result_dict.results)
        del snapshot_data
        misc.set_rng_state(training_rng)

        # Update logs.
        timestamp = time.time()
        if stats_jsonl is not None:
            stats_jsonl.write(dict(stats_dict, timestamp=timestamp))
        if stats_tfevents is not None:
            global_step = int(cur_nimg / 1e3)
            walltime = timestamp - start_time
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
            for name, value in stats_metrics.items():
                stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
            stats_tfevents.flush()
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        # Update state.
        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time

    if stats_jsonl is not None:
        stats_jsonl.close()
    if stats_tfevents is not None:
        stats_tfevents.close()
    if rank == 0:
        print()
        print('Exiting...')
    return last_snapshot_pkl


@torch.no_grad()
def _render_grid(G_ema, grid_latents, grid_c, amp_dtype):
    images = []
    for latents, c in zip(grid_latents, grid_c):
        with autocast_context(latents.z.device, amp_dtype):
            img = G_ema(z=latents.z, c=c, noise_mode='const')
        images.append(img.float().cpu())
    return torch.cat(images).numpy()
