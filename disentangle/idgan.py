"""ID-GAN (Lee et al., ECCV 2020): the distillation term and the `--cfg=idgan` preset (docs/IDGAN.md).

The generator's input is z = cat(code, nuisance) from `disentangle.latents.PosteriorBankLatent`;
for G only, the loss gains lambda * R_ID with

    R_ID = E[-log q(code | G(code, nuisance))]
         = sum_dims 1/2 (log 2 pi + log sigma_hat^2 + (code - mu_hat)^2 / sigma_hat^2),

(mu_hat, log sigma_hat^2) = E(G(...)) from the frozen stage-1 encoder: the variational lower bound
of I(code; G(code, nuisance)) with the VAE encoder as the fixed variational distribution. E sees
the generated image area-resized to its resolution (both sides use [-1, 1], so no range mapping);
it is never stepped and D never sees the term.

Choices for our CPU-sized networks (docs/IDGAN.md says why): lambda = 0.1 with a 1 kimg linear
warm-up, R1 gamma = 10 unless --gamma is given, no style mixing (a second latent in the upper
layers would render another code than the one the term asks E to recover), code entering the
mapping network unnormalised.
"""

import math
import os

import torch

from torch_utils import training_stats
from training.loss import LossTerm, autocast_context

DEFAULTS = dict(distill_weight=0.1, distill_warmup=1.0, nuisance_dim=0, bank_size=20000, r1_gamma=10.0)
STAT_PREFIX = 'IDGAN'


def gaussian_nll(code, mu, logvar, min_logvar=None):
    """-log N(code; mu, exp(logvar)) summed over dimensions -> [N] (fp32).

    `min_logvar` ([code_dim] or scalar) floors the log-variance: see DistillationTerm.
    """
    code, mu, logvar = code.float(), mu.float(), logvar.float()
    if min_logvar is not None:
        logvar = torch.maximum(logvar, torch.as_tensor(min_logvar, dtype=logvar.dtype, device=logvar.device))
    per_dim = 0.5 * (math.log(2 * math.pi) + logvar + (code - mu).square() * torch.exp(-logvar))
    return per_dim.sum(dim=1)


def warmup_factor(cur_nimg, warmup_kimg):
    """Linear ramp 0 -> 1 over the first `warmup_kimg` thousand images (1 when there is no warm-up)."""
    if warmup_kimg is None or warmup_kimg <= 0:
        return 1.0
    return min(float(cur_nimg) / (warmup_kimg * 1000), 1.0)


class DistillationTerm(LossTerm):
    """lambda * R_ID added to G's main loss; logs the term and the per-dimension code-recovery error."""

    def __init__(self, G, D, latent_sampler, training_set, device, vae_pkl=None, encoder=None, decoder=None,
                 distill_weight=DEFAULTS['distill_weight'], distill_warmup=DEFAULTS['distill_warmup']):
        del D, training_set  # the term only looks at G's images; D never sees it
        if encoder is None:
            from training.vae_snapshot import check_vae_snapshot_fits, load_vae_snapshot
            data = load_vae_snapshot(vae_pkl)
            check_vae_snapshot_fits(data, resolution=G.img_resolution, num_channels=G.img_channels,
                                    what='the generator', path=str(vae_pkl))
            encoder, decoder = data['E'], data.get('Dec')
        self.E = encoder.eval().requires_grad_(False).to(device)
        # The VAE decoder is never used in training; it rides along in the snapshot ('Dec') so that
        # generate.py --compare-vae can render the VAE beside the GAN for the same codes.
        self.Dec = None if decoder is None else decoder.eval().requires_grad_(False).to(device)
        self.code_dim = self.E.code_dim
        if getattr(latent_sampler, 'code_dim', None) != self.code_dim:
            raise ValueError(f'the latent sampler provides {getattr(latent_sampler, "code_dim", None)} code '
                             f'dimensions but the encoder has {self.code_dim}.')
        # On early, out-of-distribution fakes the encoder can claim variances far below anything it
        # gives real images; 1/sigma^2 then blows the NLL up to ~1e36 (seen in practice). Flooring
        # log sigma^2 at its smallest value over the posterior bank bounds the term by what the VAE
        # itself believes possible, and leaves it exact on images like the data.
        bank_logvar = getattr(latent_sampler, 'bank_logvar', None)
        self.min_logvar = None
        if bank_logvar is not None and bank_logvar.shape[0] > 0:
            self.min_logvar = bank_logvar.detach().min(dim=0).values.to(device, torch.float32)
        self.distill_weight = float(distill_weight)
        self.distill_warmup = float(distill_warmup)

    def modules(self):
        return {'E': self.E} if self.Dec is None else {'E': self.E, 'Dec': self.Dec}

    def g_loss(self, ctx):
        from disentangle.latents import resize_for_encoder
        code = ctx.latents.code
        images = resize_for_encoder(ctx.gen_img, self.E.img_resolution)
        amp_dtype = getattr(ctx.get('loss'), 'amp_dtype', None)
        self.E.eval()  # a resumed or deep-copied encoder must never run in training mode
        with autocast_context(images.device, amp_dtype):
            mu, logvar = self.E(images)
        nll = gaussian_nll(code, mu, logvar, self.min_logvar)
        weight = self.distill_weight * warmup_factor(ctx.cur_nimg, self.distill_warmup)
        with torch.no_grad():
            recovery = (mu.detach().float() - code.float()).square()          # [N, code_dim]
            training_stats.report(f'Loss/{STAT_PREFIX}/distill', nll.detach())
            training_stats.report(f'{STAT_PREFIX}/weight', weight)
            training_stats.report(f'{STAT_PREFIX}/recovery_mse', recovery.mean(dim=1))
            for dim in range(self.code_dim):
                training_stats.report(f'{STAT_PREFIX}/recovery_mse/dim{dim:02d}', recovery[:, dim])
        return nll * weight


# ----------------------------------------------------------------------------------------------
# The train.py preset.

def configure_idgan(c, opts, training_set):
    """`--cfg=idgan`: StyleGAN2's rule plus the VAE code in the mapping network and the distillation term."""
    from training import options as host  # the presets' shared helpers and error type
    from training.vae_snapshot import VAESnapshotError, check_vae_snapshot_fits, load_vae_snapshot

    vae = opts.get('vae')
    if not vae:
        raise host.UserError('--cfg=idgan needs --vae=vae-snapshot-*.pkl (train one first with '
                             'train.py --cfg=betavae --data=... ).')
    try:
        data = load_vae_snapshot(vae)
        check_vae_snapshot_fits(data, resolution=training_set.resolution, num_channels=training_set.num_channels,
                                what=f'--data={opts.data}', path=vae)
    except VAESnapshotError as err:
        raise host.UserError(f'--vae: {err}')
    code_dim = data['E'].code_dim
    if opts.get('code_dim') is not None and opts.code_dim != code_dim:
        raise host.UserError(f'--code-dim={opts.code_dim} differs from the VAE\'s {code_dim}; drop --code-dim '
                             f'(ID-GAN takes the code width from --vae).')
    nuisance_dim = opts.get('nuisance_dim')
    nuisance_dim = DEFAULTS['nuisance_dim'] if nuisance_dim is None else nuisance_dim

    widths = host.configure_stylegan2(c, opts, training_set)
    vae = os.path.abspath(vae) if os.path.exists(vae) else vae
    c.latent_kwargs = dict(class_name='disentangle.latents.PosteriorBankLatent', vae_pkl=vae, code_dim=code_dim,
                           nuisance_dim=nuisance_dim, bank_size=DEFAULTS['bank_size'], bank_seed=opts.seed)
    c.G_kwargs.mapping_kwargs.class_name = 'disentangle.latents.CodeMappingNetwork'
    c.G_kwargs.mapping_kwargs.code_dim = code_dim
    c.loss_kwargs.style_mixing_prob = 0  # mixing would render another code than the one distilled
    if opts.get('gamma') is None:
        # R1 gamma = 10, as both ID-GAN references, instead of the `auto` rule's 0.0002 res^2 / batch
        # (0.1 at 64x64, batch 8): under that weak R1 the discriminator overpowered the distillation term
        # on dSprites (docs/IDGAN.md, "R1 weight").
        c.loss_kwargs.r1_gamma = DEFAULTS['r1_gamma']
    weight = opts.get('distill_weight')
    warmup = opts.get('distill_warmup')
    c.extra_terms_kwargs = list(c.extra_terms_kwargs) + [dict(
        class_name='disentangle.idgan.DistillationTerm', vae_pkl=vae,
        distill_weight=DEFAULTS['distill_weight'] if weight is None else weight,
        distill_warmup=DEFAULTS['distill_warmup'] if warmup is None else warmup)]
    return widths


#: Options of train.py this preset reads (train.py rejects them with other --cfg values).
configure_idgan.options = ('vae', 'nuisance_dim', 'distill_weight', 'distill_warmup')

TRAIN_CONFIGS = {'idgan': configure_idgan}
