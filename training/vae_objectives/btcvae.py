"""beta-TCVAE (Chen et al. 2018): weight only the total-correlation part of the KL by beta.

Chen et al.'s objective with alpha = gamma = 1 is recon + MI + beta * TC + dimension-wise KL. Since
MI + TC + dimension-wise KL is the KL itself, we write it (as disentanglement_lib does) as
recon + KL + (beta - 1) * TC, with the closed-form KL (no estimator variance there) and TC from
the batch: `tc_estimator='mws'` (minibatch-weighted sampling, Chen et al.'s default and ours) or
'mss' (stratified sampling); base.kl_decomposition has both formulas. Only the TC estimate depends
on the dataset size N.
"""

from . import register
from .base import TC_ESTIMATORS, VAEObjective, gaussian_kl, kl_decomposition


@register('btcvae')
class BetaTCVAE(VAEObjective):
    hyper_params = {'beta': 6.0, 'tc_estimator': 'mws'}

    def __init__(self, beta=6.0, tc_estimator='mws', **base_kwargs):
        super().__init__(**base_kwargs)
        if beta < 0:
            raise ValueError(f'beta must be non-negative, got {beta}.')
        if tc_estimator not in TC_ESTIMATORS:
            raise ValueError(f'unknown TC estimator {tc_estimator!r}; choose one of {", ".join(TC_ESTIMATORS)}.')
        self.beta = float(beta)
        self.tc_estimator = tc_estimator

    def regulariser(self, mu, logvar, code):
        kl = gaussian_kl(mu, logvar).sum(dim=1)
        parts = kl_decomposition(code, mu, logvar, self.dataset_size, self.tc_estimator)
        regulariser = kl + (self.beta - 1) * parts['tc']
        return regulariser, dict(tc=parts['tc'].detach(), mi=parts['mi'].detach(),
                                 dimwise_kl=parts['dimwise_kl'].detach())
