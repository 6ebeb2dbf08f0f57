"""beta-VAE (Higgins et al. 2017): reconstruction + beta * KL(q(code | x) || N(0, I)).

beta = 1 is the plain VAE; beta > 1 trades reconstruction for a more factorised posterior.
ID-GAN's dSprites setting is 10 codes with beta = 8 (the default here).
"""

from . import register
from .base import VAEObjective, gaussian_kl


@register('betavae')
class BetaVAE(VAEObjective):
    hyper_params = {'beta': 8.0}

    def __init__(self, beta=8.0, **base_kwargs):
        super().__init__(**base_kwargs)
        if beta < 0:
            raise ValueError(f'beta must be non-negative, got {beta}.')
        self.beta = float(beta)

    def regulariser(self, mu, logvar, code):
        kl = gaussian_kl(mu, logvar).sum(dim=1)
        return self.beta * kl, {}
