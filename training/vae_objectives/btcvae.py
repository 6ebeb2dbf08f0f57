"""beta-TCVAE (Chen et al. 2018): weight only the total-correlation part of the KL by beta.

Chen et al.'s objective with alpha = gamma = 1 is recon + MI + beta * TC + dimension-wise KL. Since
MI + TC + dimension-wise KL is the KL itself, we write it (as disentanglement_lib does) as
recon + KL + (beta - 1) * TC, with the closed-form KL (no estimator variance there) and TC from
the minibatch-weighted sampling estimator (see base.kl_decomposition for the formula); only the
TC estimate depends on the dataset size N.
"""

from . import register
from .base import VAEObjective, gaussian_kl, kl_decomposition


@register('btcvae')
class BetaTCVAE(VAEObjective):
    hyper_params = {'beta': 6.0}

    def __init__(self, beta=6.0, **base_kwargs):
        super().__init__(**base_kwargs)
        if beta < 0:
            raise ValueError(f'beta must be non-negative, got {beta}.')
        self.beta = float(beta)

    def regulariser(self, mu, logvar, code):
        kl = gaussian_kl(mu, logvar).sum(dim=1)
        parts = kl_decomposition(code, mu, logvar, self.dataset_size)
        regulariser = kl + (self.beta - 1) * parts['tc']
        return regulariser, dict(tc=parts['tc'].detach(), mi=parts['mi'].detach(),
                                 dimwise_kl=parts['dimwise_kl'].detach())
