"""What every VAE objective shares: the likelihoods, the Gaussian KL, the minibatch estimator of the
KL decomposition, and the objective interface the VAE training loop calls.

All functions reduce in fp32 whatever dtype their inputs have (bf16 autocast upstream), and return
per-sample values [N] (or [N, code_dim]) so the loop can report them and average them itself.

Likelihoods (`recon`), on images x in [-1, 1] mapped to t = (x + 1) / 2 in [0, 1]:
- 'bernoulli': -log p(t | code) = sum over pixels of BCE-with-logits(logits, t). The right model
  for binary images (dSprites); for grey values it is the usual continuous relaxation.
- 'gaussian': fixed-variance Gaussian with mean sigmoid(logits) and sigma^2 = 1/2 per pixel (our
  choice; the one that makes the NLL the plain summed squared error, as disentanglement_lib's
  "l2" loss), i.e. sum over pixels of (sigmoid(logits) - t)^2, without the constant
  0.5 * log(pi) per pixel, which changes no gradient.
"""

import math

import torch

RECONS = ('bernoulli', 'gaussian')
LOG_2PI = math.log(2 * math.pi)


def reconstruction_nll(logits, x, recon):
    """Per-image negative log-likelihood [N] of images x in [-1, 1] under the decoder's logits."""
    logits = logits.float()
    target = (x.float() + 1) / 2
    if recon == 'bernoulli':
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction='none')
    elif recon == 'gaussian':
        nll = (torch.sigmoid(logits) - target).square()
    else:
        raise ValueError(f'unknown reconstruction likelihood {recon!r}; choose one of {", ".join(RECONS)}.')
    return nll.flatten(1).sum(dim=1)


def gaussian_kl(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, 1)) per sample and dimension [N, D], in closed form."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1 - logvar)


def gaussian_log_density(code, mu, logvar):
    """log N(code; mu, exp(logvar)) elementwise (broadcasting)."""
    code, mu, logvar = code.float(), mu.float(), logvar.float()
    return -0.5 * (LOG_2PI + logvar + (code - mu).square() * torch.exp(-logvar))


def reparameterize(mu, logvar, generator=None):
    """A sample of q(code | x) that gradients flow through (Kingma & Welling 2014)."""
    noise = torch.randn(mu.shape, device=mu.device, dtype=torch.float32, generator=generator)
    return mu.float() + noise * torch.exp(0.5 * logvar.float())


TC_ESTIMATORS = ('mws', 'mss')


def _log_mixture_weights(batch, dataset_size, estimator, device):
    """Log-weights w_ij of q(z_i | n_j) in the estimate q(z_i) ~= sum_j w_ij q(z_i | n_j): a float
    when they are all equal (mws; added after the logsumexp, as the estimator has always been
    computed), else an [M, M] tensor."""
    n = float(dataset_size)
    if estimator == 'mws':
        return -math.log(n * batch)
    if estimator == 'mss':
        if batch < 2:
            raise ValueError('the stratified TC estimator (mss) needs batches of at least 2 codes.')
        if n < batch:
            raise ValueError(f'the stratified TC estimator (mss) needs a dataset of at least the batch size '
                             f'({batch}), got {dataset_size}.')
        weights = torch.full((batch, batch), math.log((n - 1) / (n * (batch - 1))), device=device)
        weights.fill_diagonal_(-math.log(n))
        return weights
    raise ValueError(f'unknown TC estimator {estimator!r}; choose one of {", ".join(TC_ESTIMATORS)}.')


def kl_decomposition(code, mu, logvar, dataset_size, estimator='mws'):
    """Chen et al. 2018's decomposition of the KL term, per sample, from the minibatch.

    With a batch of M codes z_i ~ q(z | n_i) from a dataset of N images, the aggregate posterior
    q(z) = (1/N) sum_n q(z | n) and its marginals are estimated from the batch's posteriors as
        log q(z_i)   ~= logsumexp_j [log q(z_i | n_j)  + log w_ij]
        log q(z_id)  ~= logsumexp_j [log q(z_id | n_j) + log w_ij]   (each dimension d)
    with one of two weightings (`estimator`):
    - 'mws', minibatch-weighted sampling (Chen et al., Sec. 3.1, Eq. 3 and appendix C.1; their
      default): w_ij = 1/(N M) for all j. The weights sum to 1/N, not 1, so the estimates carry
      an offset that has no gradient but shows in the reported TC: a collapsed code (all
      posteriors equal) reads (D - 1) log N instead of 0.
    - 'mss', stratified sampling in its two-stratum form (appendix C.2 partitions further): the
      image the code came from, exactly one with weight 1/N, and the other N - 1 images, which the
      batch's other M - 1 images sample: w_ii = 1/N, w_ij = (N - 1)/(N (M - 1)). The weights sum
      to 1, so q(z_i) itself is estimated without bias and a collapsed code reads TC 0.
    log q(z|x) - log p(z) then splits into
        mutual information  log q(z_i | n_i) - log q(z_i)
        total correlation   log q(z_i) - sum_d log q(z_id)
        dimension-wise KL   sum_d log q(z_id) - log p(z_id).
    The three terms add up exactly to the single-sample KL estimate log q(z|x) - log p(z), whose
    expectation is the closed-form KL. Returns a dict of [N] tensors: mi, tc, dimwise_kl, kl_sample.
    """
    code, mu, logvar = code.float(), mu.float(), logvar.float()
    log_w = _log_mixture_weights(code.shape[0], dataset_size, estimator, code.device)
    # [i, j, d]: log q(z_id | n_j), every code against every posterior of the batch.
    pairwise = gaussian_log_density(code[:, None, :], mu[None, :, :], logvar[None, :, :])
    if isinstance(log_w, float):
        log_q_z = torch.logsumexp(pairwise.sum(dim=2), dim=1) + log_w
        log_q_z_dims = torch.logsumexp(pairwise, dim=1) + log_w                  # [N, D]
    else:
        log_q_z = torch.logsumexp(pairwise.sum(dim=2) + log_w, dim=1)
        log_q_z_dims = torch.logsumexp(pairwise + log_w[:, :, None], dim=1)
    log_q_z_given_x = gaussian_log_density(code, mu, logvar).sum(dim=1)
    log_p_z = gaussian_log_density(code, torch.zeros_like(code), torch.zeros_like(code)).sum(dim=1)
    mi = log_q_z_given_x - log_q_z
    tc = log_q_z - log_q_z_dims.sum(dim=1)
    dimwise_kl = log_q_z_dims.sum(dim=1) - log_p_z
    return dict(mi=mi, tc=tc, dimwise_kl=dimwise_kl, kl_sample=log_q_z_given_x - log_p_z)


class VAEObjective:
    """Interface of an objective. The loop, per step:

        mu, logvar = E(x); code = reparameterize(mu, logvar); logits = Dec(code)
        loss, stats = objective.loss(x, logits, mu, logvar, code)   # loss [N]; VAE optimiser step
        objective.after_vae_step(code.detach())                     # own optimisers (FactorVAE)

    Subclasses implement `regulariser` and may own modules (snapshotted under their names, resumed)
    and optimisers (resumed through state_dict). `hyper_params` lists the constructor arguments
    that train.py options set (option name = argument name) with their defaults.
    """

    cfg_name = None            # set by @register
    hyper_params = {}          # e.g. {'beta': 8.0}

    def __init__(self, code_dim, dataset_size, device='cpu', recon='bernoulli'):
        if recon not in RECONS:
            raise ValueError(f'unknown reconstruction likelihood {recon!r}; choose one of {", ".join(RECONS)}.')
        self.code_dim = int(code_dim)
        self.dataset_size = int(dataset_size)
        self.device = torch.device(device)
        self.recon = recon

    def regulariser(self, mu, logvar, code):
        """(per-sample regulariser [N], dict of per-sample statistics to report)."""
        raise NotImplementedError

    def loss(self, x, logits, mu, logvar, code):
        """(negative ELBO-like loss [N], statistics): reconstruction NLL + the objective's regulariser."""
        recon = reconstruction_nll(logits, x, self.recon)
        kl_dims = gaussian_kl(mu, logvar)
        regulariser, stats = self.regulariser(mu, logvar, code)
        stats = dict(stats, recon=recon.detach(), kl=kl_dims.sum(dim=1).detach(), kl_dims=kl_dims.detach())
        return recon + regulariser, stats

    def after_vae_step(self, code):
        """Called with the batch's detached codes after the VAE's optimiser step."""

    def modules(self):
        """name -> torch.nn.Module owned by the objective (written into snapshots)."""
        return {}

    def state_dict(self):
        """Everything beyond module weights needed to resume exactly (e.g. optimiser moments)."""
        return {}

    def load_state_dict(self, state):
        pass
