"""InfoGAN-CR (Lin et al., ICML 2020): the contrastive regulariser and `--cfg=infogan-cr` (docs/INFOGAN.md).

Pairs: draw i uniformly from the k continuous codes; two latents share code i exactly and the
noise, every other code is drawn independently for each side (categorical groups included). With
a contrastive gap g > 0 the other continuous codes of a pair differ by at least g: both values are
drawn from U(-1 + g/2, 1 - g/2) and pushed g/2 apart, which keeps them in [-1, 1] for any g < 2.
The two renderings are concatenated along channels and H (disentangle/info_heads.py) predicts i.

Objective: H minimises the cross-entropy on (detached) pairs with its own Adam (lr 2e-3,
beta1 0.5, as the official code); G minimises alpha times the same cross-entropy through H,
i.e. G learns to make the shared code easy to identify. The InfoGAN term (disentangle/infogan.py)
stays on with its own weights (official dSprites: 0.05).

Schedule: alpha is 0 before `cr_start_kimg` and `cr_weight` from then on (official dSprites: 2.0
for the last ~10% of training); the gap is piecewise constant, decreasing at given kimg. Whenever
the stage (alpha, gap) changes, H and its optimiser are re-initialised, as the official code does.
**(our choice)** While alpha is 0, H is not trained at all: it would be re-initialised at the
switch anyway and G does not see it, so it would only cost CPU time. H trains on the same pairs G
renders for its own term, once per G round, before G's pass through it (the official order).
"""

import copy

import torch

import dnnlib
from torch_utils import misc, training_stats
from training.loss import LossTerm, autocast_context

STAT_PREFIX = 'CR'
DEFAULTS = dict(cr_weight=2.0, cr_start_fraction=0.9, cr_gap='0', info_weight_cont=0.05)
H_OPT = dict(lr=0.002, betas=(0.5, 0.999))
MAX_GAP = 2.0


# ----------------------------------------------------------------------------------------------
# Pairs.

def gapped_pair(shape, gap, generator=None, device='cpu'):
    """Two U(-1, 1)-range tensors of `shape` whose entries differ by at least `gap` (0 <= gap < 2)."""
    half = 0.5 * float(gap)
    u = torch.rand(shape, generator=generator, device=device) * (2 - 2 * half) - 1 + half
    v = torch.rand(shape, generator=generator, device=device) * (2 - 2 * half) - 1 + half
    low, high = torch.minimum(u, v) - half, torch.maximum(u, v) + half
    swap = torch.rand(shape, generator=generator, device=device) < 0.5
    return torch.where(swap, high, low), torch.where(swap, low, high)


def contrastive_pairs(sampler, num_pairs, gap=0.0, generator=None, device='cpu'):
    """(latents_a, latents_b, shared int64 [num_pairs]) for an InfoGANLatent (module docstring)."""
    if sampler.cont_dim < 1:
        raise ValueError('contrastive pairs need continuous codes (--cont >= 2).')
    n = int(num_pairs)
    device = misc.draw_device(device, generator)
    base_a = sampler.sample(n, device=device, generator=generator)
    base_b = sampler.sample(n, device=device, generator=generator)
    shared = torch.randint(sampler.cont_dim, [n], generator=generator, device=device)
    if gap > 0:
        cont_a, cont_b = gapped_pair([n, sampler.cont_dim], gap, generator=generator, device=device)
    else:
        cont_a, cont_b = sampler.continuous(base_a.code), sampler.continuous(base_b.code)
    same = shared.unsqueeze(1) == torch.arange(sampler.cont_dim, device=device)
    cont_b = torch.where(same, cont_a, cont_b)
    cats_a, cats_b = base_a.code[:, :sampler.num_cat], base_b.code[:, :sampler.num_cat]
    latents_a = sampler.assemble(torch.cat([cats_a, cont_a], dim=1), base_a.noise, check=False)  # drawn here
    latents_b = sampler.assemble(torch.cat([cats_b, cont_b], dim=1), base_a.noise, check=False)
    return latents_a, latents_b, shared


# ----------------------------------------------------------------------------------------------
# Schedule.

def parse_gap_schedule(text):
    """'1.9' or '1.9,0@85' -> [(0.0, 1.9), (85.0, 0.0)]: (from kimg, gap); ValueError if malformed."""
    steps = []
    for index, part in enumerate(str(text).split(',')):
        value, sep, kimg = part.strip().partition('@')
        try:
            gap = float(value)
            start = float(kimg) if sep else 0.0
        except ValueError:
            raise ValueError(f'--cr-gap={text} is not GAP[,GAP@KIMG...] (e.g. --cr-gap=1.9,0@85).')
        if index == 0 and sep and start != 0:
            raise ValueError(f'--cr-gap={text}: the first gap applies from the start; write it without @KIMG.')
        if index > 0 and not sep:
            raise ValueError(f'--cr-gap={text}: every gap after the first needs @KIMG (e.g. 1.9,0@85).')
        if not 0 <= gap < MAX_GAP:
            raise ValueError(f'--cr-gap={text}: a gap must lie in [0, 2) (codes live in [-1, 1]).')
        if steps and (start <= steps[-1][0] or gap > steps[-1][1]):
            raise ValueError(f'--cr-gap={text}: the gap may only decrease, at increasing kimg.')
        steps.append((start, gap))
    return steps


class ContrastiveSchedule:
    """alpha and gap as functions of training progress; `stage()` changes exactly when either does."""

    def __init__(self, cr_weight, cr_start_kimg, gap_steps=((0.0, 0.0),)):
        self.cr_weight = float(cr_weight)
        self.cr_start_kimg = float(cr_start_kimg)
        self.gap_steps = [(float(k), float(g)) for k, g in gap_steps]
        self.boundaries = sorted({self.cr_start_kimg} | {k for k, _ in self.gap_steps[1:]})

    def alpha(self, cur_nimg):
        return self.cr_weight if cur_nimg >= self.cr_start_kimg * 1000 else 0.0

    def gap(self, cur_nimg):
        return [g for k, g in self.gap_steps if cur_nimg >= k * 1000][-1]

    def stage(self, cur_nimg):
        return sum(1 for k in self.boundaries if cur_nimg >= k * 1000)


# ----------------------------------------------------------------------------------------------
# The loss term.

class ContrastiveTerm(LossTerm):
    """alpha * CE(H(pair), shared code) for G; H trained on the pairs with its own optimiser."""

    def __init__(self, G, D, latent_sampler, training_set, device, cr_weight=DEFAULTS['cr_weight'],
                 cr_start_kimg=0.0, cr_gap=DEFAULTS['cr_gap']):
        del D, training_set
        from disentangle.info_heads import ContrastiveClassifier
        if getattr(latent_sampler, 'cont_dim', 0) < 2:
            raise ValueError('InfoGAN-CR tells continuous codes apart; it needs at least 2 (--cont=2 or more).')
        self.sampler = latent_sampler
        self.device = torch.device(device)
        self.schedule = ContrastiveSchedule(cr_weight, cr_start_kimg, parse_gap_schedule(cr_gap))
        self.h_kwargs = dict(img_resolution=G.img_resolution, img_channels=G.img_channels,
                             num_codes=latent_sampler.cont_dim)
        self.H = ContrastiveClassifier(**self.h_kwargs).train().requires_grad_(False).to(self.device)
        self.opt = self._new_optimizer()
        self.stage = None
        self.num_reinits = 0

    def _new_optimizer(self):
        return torch.optim.Adam(self.H.parameters(), **H_OPT)

    def reinitialize(self):
        """Fresh weights in place (the snapshot keeps its reference to H) and a fresh optimiser."""
        from disentangle.info_heads import ContrastiveClassifier
        fresh = ContrastiveClassifier(**self.h_kwargs)
        with torch.no_grad():
            self.H.load_state_dict(fresh.state_dict())
        self.opt = self._new_optimizer()
        self.num_reinits += 1

    def modules(self):
        return {'H': self.H}

    def state_dict(self):
        return dict(stage=self.stage, num_reinits=self.num_reinits, opt=copy.deepcopy(self.opt.state_dict()))

    def load_state_dict(self, state):
        if not state:
            return
        self.stage = state['stage']
        self.num_reinits = state.get('num_reinits', 0)
        self.opt = self._new_optimizer()
        self.opt.load_state_dict(state['opt'])

    def _update_stage(self, cur_nimg):
        stage = self.schedule.stage(cur_nimg)
        if self.stage is not None and stage != self.stage:
            self.reinitialize()
        self.stage = stage

    def _train_H(self, pairs, shared, amp_dtype):
        self.H.train().requires_grad_(True)
        with autocast_context(pairs.device, amp_dtype):
            logits = self.H(pairs.detach())
        loss = torch.nn.functional.cross_entropy(logits.float(), shared)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.H.parameters() if p.grad is not None]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for p in params:   # every process keeps the same H
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.H.requires_grad_(False)
        with torch.no_grad():
            training_stats.report(f'Loss/{STAT_PREFIX}/H', loss.detach())
            training_stats.report(f'{STAT_PREFIX}/H_accuracy', (logits.argmax(dim=1) == shared).float())

    def g_loss(self, ctx):
        self._update_stage(ctx.cur_nimg)
        alpha = self.schedule.alpha(ctx.cur_nimg)
        training_stats.report(f'{STAT_PREFIX}/alpha', alpha)
        training_stats.report(f'{STAT_PREFIX}/gap', self.schedule.gap(ctx.cur_nimg))
        if alpha == 0:
            return None
        n = ctx.gen_img.shape[0]
        latents_a, latents_b, shared = contrastive_pairs(self.sampler, n, self.schedule.gap(ctx.cur_nimg),
                                                         device=ctx.gen_img.device)
        both = {key: torch.cat([latents_a[key], latents_b[key]]) for key in latents_a}
        images, _ws = ctx.loss.run_G(dnnlib.EasyDict(both), torch.cat([ctx.gen_c, ctx.gen_c]))
        pairs = torch.cat([images[:n], images[n:]], dim=1)
        amp_dtype = ctx.loss.amp_dtype
        self._train_H(pairs, shared, amp_dtype)
        self.H.eval()
        with autocast_context(pairs.device, amp_dtype):
            logits = self.H(pairs)
        loss = torch.nn.functional.cross_entropy(logits.float(), shared, reduction='none')
        training_stats.report(f'Loss/{STAT_PREFIX}/G', loss.detach())
        return alpha * loss


# ----------------------------------------------------------------------------------------------
# The train.py preset.

def configure_infogan_cr(c, opts, training_set):
    """`--cfg=infogan-cr`: the InfoGAN preset with official InfoGAN-CR weights, plus the contrastive term."""
    from training import options as host  # the presets' shared helpers and error type
    from disentangle import infogan

    defaults = dict(infogan.DEFAULTS, info_weight_cont=DEFAULTS['info_weight_cont'])
    cont = opts.get('cont') if opts.get('cont') is not None else defaults['cont']
    if cont < 2:
        raise host.UserError(f'--cfg=infogan-cr needs at least 2 continuous codes to tell apart; got --cont={cont}.')
    gap = opts.get('cr_gap') if opts.get('cr_gap') is not None else DEFAULTS['cr_gap']
    try:
        parse_gap_schedule(gap)
    except ValueError as err:
        raise host.UserError(str(err))
    start = opts.get('cr_start_kimg')
    if start is None:
        start = DEFAULTS['cr_start_fraction'] * opts.kimg
    widths = infogan.configure_infogan(c, opts, training_set, defaults=defaults)
    weight = opts.get('cr_weight')
    c.extra_terms_kwargs = list(c.extra_terms_kwargs) + [dict(
        class_name='disentangle.contrastive.ContrastiveTerm', cr_weight=DEFAULTS['cr_weight'] if weight is None else weight,
        cr_start_kimg=float(start), cr_gap=str(gap))]
    return widths


configure_infogan_cr.options = ('cat', 'cont', 'nuisance_dim', 'info_weight_cat', 'info_weight_cont', 'info_std',
                                'cr_weight', 'cr_start_kimg', 'cr_gap')

TRAIN_CONFIGS = {'infogan-cr': configure_infogan_cr}
