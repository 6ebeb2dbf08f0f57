"""InfoGAN (Chen et al. 2016): the mutual-information term and the `--cfg=infogan` preset (docs/INFOGAN.md).

G's input is z = cat(one-hot categorical codes, continuous codes, noise) from
`disentangle.infogan_latent.InfoGANLatent`. A head Q on D's penultimate features predicts the
codes of a generated image; both G and Q (with D's trunk) minimise

    L_I = w_cat * sum_groups CE(Q_cat(G(z)), category)
        + w_cont * sum_codes -log N(code; Q_mean(G(z)), Q_std(G(z))^2)

which is -E[log Q(c | G(z, c))], the negative variational lower bound of I(c; G(z, c)) up to the
constant entropy of the code prior. The term is added to G's loss in its main phase and to D's
loss on fakes in D's main phase, with the same weights (the official InfoGAN-CR code uses one
coefficient for both sides too). The head is optimised with D's optimiser
(`extra_parameters('D')`), like a part of D.

Choices **(ours, docs/INFOGAN.md says why)**: Q reads the un-augmented fake (with ADA on, an extra
D pass), the shared trunk has no minibatch-stddev layer (Q(x) must depend on x alone), style
mixing is off, the codes enter the mapping network unnormalised (CodeMappingNetwork), the std of
the continuous codes is fixed at 1 unless `--info-std=learned`.
"""

import math

import torch

from torch_utils import training_stats
from training.loss import LossTerm, autocast_context

STAT_PREFIX = 'Info'
DEFAULTS = dict(cont=5, noise_dim=5, info_weight_cat=1.0, info_weight_cont=0.1, info_std='fixed')
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def categorical_nll(cat_logits, categories):
    """Sum over groups of the cross-entropy of logits [N, K_g] against int64 categories [N, G] -> [N]."""
    total = torch.zeros([categories.shape[0]], device=categories.device)
    for group, logits in enumerate(cat_logits):
        total = total + torch.nn.functional.cross_entropy(logits.float(), categories[:, group], reduction='none')
    return total


def continuous_nll(values, mean, logstd=None):
    """Sum over codes of -log N(value; mean, exp(logstd)^2) -> [N]; logstd None = unit std."""
    values, mean = values.float(), mean.float()
    if logstd is None:
        per_code = HALF_LOG_2PI + 0.5 * (values - mean).square()
    else:
        logstd = logstd.float()
        per_code = HALF_LOG_2PI + logstd + 0.5 * (values - mean).square() * torch.exp(-2 * logstd)
    return per_code.sum(dim=1)


class InfoTerm(LossTerm):
    """lambda-weighted InfoGAN term for G (Gmain) and for D + Q on fakes (Dmain); logs code recovery."""

    needs_d_features = True

    def __init__(self, G, D, latent_sampler, training_set, device, info_weight_cat=DEFAULTS['info_weight_cat'],
                 info_weight_cont=DEFAULTS['info_weight_cont'], learn_std=False):
        del G, training_set
        from disentangle.info_heads import QHead, QNetwork
        for name in ('cat_sizes', 'cont_dim', 'code_dim'):
            if not hasattr(latent_sampler, name):
                raise ValueError(f'the InfoGAN term needs an InfoGAN latent sampler (with {name}); got '
                                 f'{type(latent_sampler).__name__}.')
        if getattr(D, 'c_dim', 0) != 0:
            raise ValueError('InfoGAN needs an unconditional discriminator (Q reads images alone); drop --cond.')
        self.sampler = latent_sampler
        self.head = QHead(D.feature_dim, latent_sampler.cat_sizes, latent_sampler.cont_dim,
                          learn_std=learn_std).train().to(device)
        self.Q = QNetwork(D, self.head)
        self.info_weight_cat = float(info_weight_cat)
        self.info_weight_cont = float(info_weight_cont)

    def modules(self):
        return {'Q': self.Q}

    def extra_parameters(self, net_name):
        return list(self.head.parameters()) if net_name == 'D' else []

    def _features(self, ctx):
        # With an augment pipe, ctx.gen_features belong to the augmented image: Q would learn to
        # read codes through random flips and shifts and would see other images at evaluation.
        if ctx.loss.augment_pipe is None and ctx.get('gen_features') is not None:
            return ctx.gen_features
        with autocast_context(ctx.gen_img.device, ctx.loss.amp_dtype):
            _logits, features = ctx.D(ctx.gen_img, ctx.gen_c, return_features=True)
        return features.float()

    def info_loss(self, head_out, code, report=True):
        """[N] weighted NLL of the sampled code under Q's prediction (the module docstring's L_I)."""
        sampler = self.sampler
        categories, values = sampler.categories(code), sampler.continuous(code)
        loss = torch.zeros([code.shape[0]], device=code.device)
        if sampler.num_cat:
            cat = categorical_nll(head_out.cat_logits, categories)
            loss = loss + self.info_weight_cat * cat
        if sampler.cont_dim:
            cont = continuous_nll(values, head_out.cont_mean, head_out.cont_logstd)
            loss = loss + self.info_weight_cont * cont
        if report:
            with torch.no_grad():
                if sampler.num_cat:
                    training_stats.report(f'Loss/{STAT_PREFIX}/cat', cat)
                    hits = torch.stack([logits.argmax(dim=1) == categories[:, g]
                                        for g, logits in enumerate(head_out.cat_logits)], dim=1)
                    training_stats.report(f'{STAT_PREFIX}/cat_accuracy', hits.float().mean(dim=1))
                if sampler.cont_dim:
                    training_stats.report(f'Loss/{STAT_PREFIX}/cont', cont)
                    error = (head_out.cont_mean.detach().float() - values).square()
                    training_stats.report(f'{STAT_PREFIX}/cont_mse', error.mean(dim=1))
        return loss

    def g_loss(self, ctx):
        self.head.requires_grad_(False)   # G's phase steps G only
        return self.info_loss(self.head(self._features(ctx)), ctx.latents.code)

    def d_loss(self, ctx):
        self.head.requires_grad_(True)
        return self.info_loss(self.head(self._features(ctx)), ctx.latents.code, report=False)


# ----------------------------------------------------------------------------------------------
# The train.py preset.

def parse_cat(text):
    """'10' or '10,10' -> (10, 10); None or '' -> (). ValueError with a one-sentence reason."""
    if text is None or str(text).strip() == '':
        return ()
    sizes = []
    for part in str(text).split(','):
        try:
            size = int(part.strip())
        except ValueError:
            raise ValueError(f'--cat={text} is not a comma-separated list of category counts (e.g. --cat=10 or '
                             f'--cat=10,10).')
        if size < 2:
            raise ValueError(f'--cat={text}: a categorical code needs at least 2 categories (e.g. --cat=10); '
                             f'leave --cat out for no categorical code.')
        sizes.append(size)
    return tuple(sizes)


def _opt(opts, name, default):
    value = opts.get(name)
    return default if value is None else value


def configure_infogan(c, opts, training_set, defaults=DEFAULTS):
    """`--cfg=infogan`: StyleGAN2's rule plus InfoGAN's codes in the mapping network and the MI term."""
    from training import options as host  # the presets' shared helpers and error type

    try:
        cat_sizes = parse_cat(opts.get('cat'))
    except ValueError as err:
        raise host.UserError(str(err))
    cont = _opt(opts, 'cont', defaults['cont'])
    if not cat_sizes and cont == 0:
        raise host.UserError('--cont=0 without --cat leaves InfoGAN no code; give --cat=10 and/or --cont=N.')
    if opts.get('cond'):
        raise host.UserError(f'--cfg={opts.cfg} trains an unconditional GAN (Q reads images alone); drop --cond.')
    if opts.get('info_weight_cat') is not None and not cat_sizes:
        raise host.UserError('--info-weight-cat needs a categorical code; add --cat=10 or drop --info-weight-cat.')
    if opts.get('info_weight_cont') is not None and cont == 0:
        raise host.UserError('--info-weight-cont needs continuous codes; set --cont or drop --info-weight-cont.')
    noise_dim = _opt(opts, 'nuisance_dim', defaults['noise_dim'])

    widths = host.configure_stylegan2(c, opts, training_set)
    c.latent_kwargs = dict(class_name='disentangle.infogan_latent.InfoGANLatent', cat_sizes=list(cat_sizes),
                           cont_dim=cont, noise_dim=noise_dim)
    c.G_kwargs.mapping_kwargs.class_name = 'disentangle.latents.CodeMappingNetwork'
    c.G_kwargs.mapping_kwargs.code_dim = sum(cat_sizes) + cont
    c.loss_kwargs.style_mixing_prob = 0           # mixing would render other codes than Q is asked for
    c.D_kwargs.epilogue_kwargs.mbstd_num_channels = 0   # Q(x) must not depend on the rest of the batch
    c.extra_terms_kwargs = list(c.extra_terms_kwargs) + [dict(
        class_name='disentangle.infogan.InfoTerm',
        info_weight_cat=_opt(opts, 'info_weight_cat', defaults['info_weight_cat']),
        info_weight_cont=_opt(opts, 'info_weight_cont', defaults['info_weight_cont']),
        learn_std=_opt(opts, 'info_std', defaults['info_std']) == 'learned')]
    return widths


#: Options of train.py this preset reads (train.py rejects them with other --cfg values).
configure_infogan.options = ('cat', 'cont', 'nuisance_dim', 'info_weight_cat', 'info_weight_cont', 'info_std')

TRAIN_CONFIGS = {'infogan': configure_infogan}
