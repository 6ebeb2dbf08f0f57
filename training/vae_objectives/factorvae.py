"""FactorVAE (Kim & Mnih 2018): recon + KL + gamma * TC, with TC estimated by a discriminator.

The discriminator D tells codes z ~ q(z) (class 0) from codes whose dimensions were permuted
independently across the batch (class 1, samples of prod_d q(z_d)). With the density-ratio trick
TC = KL(q(z) || prod_d q(z_d)) ~= E[log D_0(z) - log D_1(z)] = E[logit_0 - logit_1] (paper, Eq. 3).
D is trained with its own Adam (lr 1e-4, betas (0.5, 0.9), as in the paper) after every VAE step;
the VAE's gradient through the TC term reaches the encoder only, never D.

Our choice: D sees the same batch's codes, detached, and their permutation (as disentanglement_lib),
instead of the paper's second batch; the permuted batch is still a sample of the product of the
batch's marginals and the loop reads each image once. D is the paper's 6 x 1000 leaky-ReLU MLP
unless `disc_hidden` / `disc_layers` make it smaller; it runs in fp32.
"""

import torch

from networks.vae import CodeDiscriminator
from torch_utils import training_stats

from . import register
from .base import VAEObjective, gaussian_kl


def permute_dims(code, generator=None):
    """Shuffle each column (code dimension) of [N, D] with its own random permutation of the batch."""
    keys = torch.rand(code.shape, device=code.device, generator=generator)
    order = keys.argsort(dim=0)
    return code.gather(0, order)


@register('factorvae')
class FactorVAE(VAEObjective):
    hyper_params = {'gamma': 10.0}

    def __init__(self, gamma=10.0, disc_hidden=1000, disc_layers=6, disc_lr=1e-4, disc_betas=(0.5, 0.9),
                 **base_kwargs):
        super().__init__(**base_kwargs)
        if gamma < 0:
            raise ValueError(f'gamma must be non-negative, got {gamma}.')
        self.gamma = float(gamma)
        self.D_tc = CodeDiscriminator(code_dim=self.code_dim, hidden=disc_hidden, layers=disc_layers)
        self.D_tc = self.D_tc.train().requires_grad_(False).to(self.device)
        self.opt = torch.optim.Adam(self.D_tc.parameters(), lr=disc_lr, betas=tuple(disc_betas))

    def regulariser(self, mu, logvar, code):
        kl = gaussian_kl(mu, logvar).sum(dim=1)
        logits = self.D_tc(code.float()).float()   # D's weights stay frozen here: requires_grad is off
        tc = logits[:, 0] - logits[:, 1]
        return kl + self.gamma * tc, dict(tc=tc.detach())

    def after_vae_step(self, code):
        code = code.detach().float()
        labels_joint = torch.zeros(code.shape[0], dtype=torch.long, device=code.device)
        self.D_tc.requires_grad_(True)
        logits_joint = self.D_tc(code)
        logits_perm = self.D_tc(permute_dims(code))
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits_joint, labels_joint)
                      + torch.nn.functional.cross_entropy(logits_perm, 1 - labels_joint))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)   # no stale D gradients between steps
        self.D_tc.requires_grad_(False)
        training_stats.report('Loss/D_tc', loss.detach())
        accuracy = 0.5 * ((logits_joint.argmax(1) == 0).float().mean() + (logits_perm.argmax(1) == 1).float().mean())
        training_stats.report('VAE/D_tc_accuracy', accuracy)

    def modules(self):
        return {'D_tc': self.D_tc}

    def state_dict(self):
        return {'opt': self.opt.state_dict()}

    def load_state_dict(self, state):
        if state and state.get('opt') is not None:
            self.opt.load_state_dict(state['opt'])
