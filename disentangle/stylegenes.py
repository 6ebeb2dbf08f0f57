"""StyleGenes (Ntavelis et al., WACV 2024; docs/STYLEGENES.md): a gene bank instead of the mapping MLP.

No official code exists; every concrete choice below is this project's (docs/STYLEGENES.md says why).

A latent is a *genome*: N integer variant indices, one per gene, drawn uniformly and independently
from K variants. Each gene owns a bank of K learnable vectors of width `gene_dim`; the genome's
vectors are concatenated into w. That gives K^N distinct latents from N * K stored vectors.

    z = cat(code [code_dim], genome [N] as float)          code_dim = 0 without ID-GAN
    w = concat_g bank[g, genome_g]  (+ P(.) when N * gene_dim != w_dim)
        + code_mlp(code)  (ID-GAN)  + embed(c)  (class labels)

Choices
- Combination: concatenation. With the default gene_dim = w_dim / N there is no projection, so gene
  g owns exactly the slice w[g * gene_dim:(g + 1) * gene_dim] and a gene edit touches only its
  slice. With an explicit `--gene-dim` that does not tile w_dim, one linear equalised-lr layer P
  maps the concatenation to w_dim (then every gene can reach every style).
- Initialisation N(0, 1): the scale of the host's normalised z, and of a fresh MLP's w.
- Learning rate: the bank trains at the full G learning rate (multiplier 1), like the synthesis
  network's learned constant input, which is also a table of free vectors: with the host's 0.01
  multiplier a vector would move by at most ~0.03 in a 10 kimg run. Adam with beta1 = 0 takes no
  step on a variant that was not drawn in the batch (its gradient is exactly zero).
- ID-GAN (`--cfg=idgan --mapping=genes`): the genes replace the Gaussian nuisance, and the VAE
  code enters through a small MLP (`--map` layers of width w_dim, lr multiplier 0.01 as the host's
  mapping, code unnormalised as in CodeMappingNetwork) whose output is *added* to w. So every style
  can follow the code, the distillation term still sees the code through E(G(z)), and genes keep
  their own slices for the nuisance.
- Truncation: `w_avg` keeps the host's meaning, the mean of w under the latent distribution, and
  `truncation_psi` lerps w towards it exactly as StyleGAN2 does. Under uniform genes the mean of
  the gene part is known exactly, the centroid of each gene's bank (no EMA lag, and G_ema's
  centroid follows G_ema's bank); the additive code/label offset has no closed form, so its mean
  is tracked by the host's EMA (beta 0.995). Because w is affine in the chosen vectors, the lerp
  equals pulling each gene's variant towards its gene's centroid.
- z carries the genome as floats so that G(z, c) keeps the host's signature; the mapping rejects
  values that are not integers in [0, K) with one sentence (e.g. Gaussian z from the wrong sampler).

The `--mapping=genes` choice is registered in `TRAIN_MAPPINGS`, collected by disentangle/configs.py;
train.py knows only the registry. This file is embedded in snapshots (persistent classes): at module
level it may only import torch, numpy, dnnlib and torch_utils.
"""

import numpy as np
import torch

import dnnlib
from torch_utils import misc, persistence

DEFAULTS = dict(genes=16, variants=32)


class GeneError(ValueError):
    """A genome, gene option or gene edit that does not fit the network (one sentence naming the fix)."""


def check_gene_counts(num_genes, num_variants):
    if int(num_genes) < 1:
        raise GeneError(f'--genes={num_genes} is invalid: a genome needs at least 1 gene.')
    if int(num_variants) < 1:
        raise GeneError(f'--variants={num_variants} is invalid: each gene needs at least 1 variant.')


def check_genome(genome, num_variants, what='genome'):
    """Raise GeneError unless `genome` (tensor, any shape) holds integers in [0, num_variants).

    Only tensors on the CPU are read (there the values are already on the host): reading a device
    tensor would stall the device. Genomes from the sampler are valid by construction and are not
    checked; the doors users pass genomes through (assemble, with_genes, an evaluation-mode G)
    are, and an index is clamped into range wherever it reads the bank.
    """
    if genome.numel() == 0 or genome.device.type != 'cpu':
        return
    if genome.is_floating_point() and not bool((genome == genome.round()).all()):
        raise GeneError(f'the {what} holds non-integer values; a genes network takes variant indices in '
                        f'z (draw z with the snapshot\'s "latent" sampler, not torch.randn).')
    low, high = int(genome.min()), int(genome.max())
    if low < 0 or high >= num_variants:
        bad = low if low < 0 else high
        raise GeneError(f'variant index {bad} in the {what} is out of range: this network has {num_variants} '
                        f'variants per gene (0-{num_variants - 1}).')


def variant_indices(genome, num_variants, what='genome', check=True):
    """int64 indices of a genome (checked first where check_genome can), clamped into the bank."""
    if check:
        check_genome(genome, num_variants, what)
    return genome.round().long().clamp(0, num_variants - 1)


# ----------------------------------------------------------------------------------------------
# Seam 1: the latent sampler.

@persistence.persistent_class
class GeneLatent(torch.nn.Module):
    """z = cat(code, genome) with a uniform genome of `num_genes` indices in [0, num_variants).

    `code_latent_kwargs` (ID-GAN) builds the code sampler (a PosteriorBankLatent without nuisance):
    its code leads z, and this sampler then offers `code_dim`, `bank_logvar`, `code_quantiles` and
    `assemble` so the distillation term, traversals and --encode work unchanged. Output keys:
    z, genes (int64 [N, num_genes]), nuisance (the genome as float: what replaces the nuisance),
    and code with ID-GAN.
    """

    def __init__(self, num_genes=DEFAULTS['genes'], num_variants=DEFAULTS['variants'], code_latent_kwargs=None):
        super().__init__()
        check_gene_counts(num_genes, num_variants)
        self.num_genes, self.num_variants = int(num_genes), int(num_variants)
        self.code_latent = None
        if code_latent_kwargs is not None:
            self.code_latent = dnnlib.util.construct_class_by_name(**code_latent_kwargs)
            if getattr(self.code_latent, 'nuisance_dim', 0):
                raise GeneError('the genes replace the Gaussian nuisance; build the code sampler with nuisance_dim=0.')
        self.gene_offset = self.code_latent.code_dim if self.code_latent is not None else 0
        self.z_dim = self.gene_offset + self.num_genes

    # Present only with a code (ID-GAN): plug-in code tests `hasattr(sampler, 'code_dim')`.
    @property
    def code_dim(self):
        if self.code_latent is None:
            raise AttributeError('a genes-only sampler has no code')
        return self.code_latent.code_dim

    @property
    def bank_logvar(self):
        if self.code_latent is None:
            raise AttributeError('a genes-only sampler has no posterior bank')
        return self.code_latent.bank_logvar

    def code_quantiles(self, *args, **kwargs):
        if self.code_latent is None:
            raise GeneError('this genes network has no code to traverse; traverse its genes instead.')
        return self.code_latent.code_quantiles(*args, **kwargs)

    @property
    def num_distinct_genomes(self):
        return self.num_variants ** self.num_genes    # exact (Python int)

    def prepare(self, training_set, device='cpu', encoder=None):
        if self.code_latent is not None and hasattr(self.code_latent, 'prepare'):
            self.code_latent.prepare(training_set, device=device, encoder=encoder)

    def sample(self, batch_size, device='cpu', generator=None):
        device = misc.draw_device(device, generator)
        genes = torch.randint(self.num_variants, [int(batch_size), self.num_genes], generator=generator, device=device)
        code = None
        if self.code_latent is not None:
            code = self.code_latent.sample(batch_size, device=device, generator=generator).code
        return self._output(code, genes)

    def sample_seed(self, seed, device='cpu'):
        """One genome per integer seed, the same on every machine (numpy's generator, as generate.py)."""
        genes = np.random.RandomState(int(seed)).randint(self.num_variants, size=[1, self.num_genes])
        code = self.code_latent.sample_seed(seed, device=device).code if self.code_latent is not None else None
        return self.assemble(code, torch.from_numpy(genes).to(device))

    def assemble(self, code, nuisance):
        """The sampler's output for a code [N, code_dim] (None without one) and genomes [N, num_genes]."""
        genes = torch.as_tensor(nuisance)
        misc.assert_shape(genes, [None, self.num_genes])
        return self._output(code, variant_indices(genes, self.num_variants))

    def _output(self, code, genes):
        out = dnnlib.EasyDict(genes=genes, nuisance=genes.float())
        if self.code_latent is None:
            out.z = genes.float()
        else:
            misc.assert_shape(code, [genes.shape[0], self.code_dim])
            out.code = code
            out.z = torch.cat([code.float(), genes.to(code.device).float()], dim=1)
        return out

    def genome(self, z):
        """int64 [N, num_genes]: the genome slice of z."""
        misc.assert_shape(z, [None, self.z_dim])
        return variant_indices(z[:, self.gene_offset:], self.num_variants)

    def with_genes(self, z, genes):
        """A copy of z [N, z_dim] whose genome slice is `genes` (int [N or 1, num_genes])."""
        genes = torch.as_tensor(genes)
        check_genome(genes, self.num_variants)   # before the copy: user input is checked on the host
        genes = genes.to(z.device)
        z = z.clone()
        z[:, self.gene_offset:] = genes.to(z.dtype)
        return z

    def layout(self):
        out = dict(kind='genes', z_dim=self.z_dim, genes=[self.gene_offset, self.z_dim], num_genes=self.num_genes,
                   num_variants=self.num_variants, distinct_genomes=str(self.num_distinct_genomes))
        if self.code_latent is not None:
            out.update(code=[0, self.gene_offset], code_dim=self.code_dim, code_latent=self.code_latent.layout())
        return out


# ----------------------------------------------------------------------------------------------
# Seam 2: the mapping network.

@persistence.persistent_class
class GeneMappingNetwork(torch.nn.Module):
    """The gene bank: z = cat(code, genome) -> ws [N, num_ws, w_dim] (module docstring).

    Host-compatible: forward(z, c, truncation_psi, truncation_cutoff, skip_w_avg_update, update_emas),
    `w_avg` [w_dim], `num_ws`, `w_dim`, `z_dim`, `c_dim`. Runs in float32 whatever the autocast state.
    `num_layers` and `lr_multiplier` are the code MLP's (train.py passes --map as num_layers).
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_genes=DEFAULTS['genes'], num_variants=DEFAULTS['variants'],
                 gene_dim=None, code_dim=0, num_layers=2, lr_multiplier=0.01, bank_lr_multiplier=1.0,
                 w_avg_beta=0.995):
        super().__init__()
        from networks.stylegan2 import FullyConnectedLayer  # construction only; snapshots carry the class
        check_gene_counts(num_genes, num_variants)
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_genes, self.num_variants, self.code_dim = int(num_genes), int(num_variants), int(code_dim)
        if z_dim != self.code_dim + self.num_genes:
            raise GeneError(f'z_dim={z_dim} must equal code_dim + genes = {self.code_dim} + {self.num_genes}; '
                            f'build G with the GeneLatent sampler\'s z_dim.')
        if gene_dim is None:
            if w_dim % self.num_genes != 0:
                raise GeneError(f'--genes={self.num_genes} does not divide w_dim={w_dim}; pick a divisor, or give '
                                f'--gene-dim (a linear layer then projects the genes to w_dim).')
            gene_dim = w_dim // self.num_genes
        self.gene_dim = int(gene_dim)
        if self.gene_dim < 1:
            raise GeneError(f'--gene-dim={gene_dim} is invalid: a variant needs at least 1 dimension.')
        self.bank_gain = float(bank_lr_multiplier)
        self.bank = torch.nn.Parameter(torch.randn([self.num_genes, self.num_variants, self.gene_dim])
                                       / self.bank_gain)
        self.proj = None
        if self.num_genes * self.gene_dim != w_dim:
            self.proj = FullyConnectedLayer(self.num_genes * self.gene_dim, w_dim)
        self.num_layers = int(num_layers) if self.code_dim > 0 else 0
        features = [self.code_dim] + [w_dim] * self.num_layers
        for idx in range(self.num_layers):
            last = idx == self.num_layers - 1
            setattr(self, f'code_fc{idx}', FullyConnectedLayer(features[idx], features[idx + 1],
                                                               activation='linear' if last else 'lrelu',
                                                               lr_multiplier=lr_multiplier))
        self.embed = FullyConnectedLayer(c_dim, w_dim) if c_dim > 0 else None
        self.w_avg_beta = w_avg_beta
        self.register_buffer('offset_avg', torch.zeros([w_dim]))

    @property
    def has_offset(self):
        return self.code_dim > 0 or self.c_dim > 0

    def gene_slice(self, gene):
        """(start, stop) of gene `gene` in w, or None when a projection mixes the genes."""
        return None if self.proj is not None else (gene * self.gene_dim, (gene + 1) * self.gene_dim)

    def genes_to_w(self, vectors):
        """[N, num_genes, gene_dim] chosen vectors -> the gene part of w [N, w_dim]."""
        x = vectors.flatten(1)
        return self.proj(x) if self.proj is not None else x

    def bank_vectors(self, genes):
        """[N, num_genes, gene_dim]: each gene's chosen variant (indexing: gradients reach only these)."""
        rows = torch.arange(self.num_genes, device=genes.device).unsqueeze(0)
        return self.bank[rows, genes] * self.bank_gain

    @property
    def w_avg(self):
        """Mean w under uniform genes: the bank centroids exactly, plus the EMA of the code/label offset."""
        with torch.autocast(device_type=self.bank.device.type, enabled=False):
            centroid = self.bank.float().mean(dim=1, keepdim=True).transpose(0, 1) * self.bank_gain
            return self.genes_to_w(centroid)[0] + self.offset_avg

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False, update_emas=None):
        if update_emas is not None:
            skip_w_avg_update = not update_emas
        with torch.autocast(device_type=z.device.type, enabled=False):  # fp32 like the host's mapping
            misc.assert_shape(z, [None, self.z_dim])
            # Checked outside training only: in a training step z comes from the sampler, and a
            # check there would cost a host sync per forward on a GPU.
            genes = variant_indices(z[:, self.code_dim:], self.num_variants, what='genome in z', check=not self.training)
            x = self.genes_to_w(self.bank_vectors(genes))
            if self.has_offset:
                offset = torch.zeros_like(x)
                if self.code_dim > 0:
                    h = z[:, :self.code_dim].to(torch.float32)
                    for idx in range(self.num_layers):
                        h = getattr(self, f'code_fc{idx}')(h)
                    offset = offset + h
                if self.c_dim > 0:
                    misc.assert_shape(c, [None, self.c_dim])
                    offset = offset + self.embed(c.to(torch.float32))
                if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
                    self.offset_avg.copy_(offset.detach().mean(dim=0).lerp(self.offset_avg, self.w_avg_beta))
                x = x + offset
            if self.num_ws is not None:
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
            if truncation_psi != 1:
                w_avg = self.w_avg
                if self.num_ws is None or truncation_cutoff is None:
                    x = w_avg.lerp(x, truncation_psi)
                else:
                    head = w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                    x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


def mapping_cost(mapping, batch=1):
    """dict(params, bank_params, bytes, macs): analytic per-sample multiply-accumulates of a mapping network."""
    params = sum(p.numel() for p in mapping.parameters())
    macs = 0
    for module in mapping.modules():
        if hasattr(module, 'in_features') and hasattr(module, 'out_features') and hasattr(module, 'weight'):
            macs += module.in_features * module.out_features
    bank = getattr(mapping, 'bank', None)
    return dict(params=params, bank_params=0 if bank is None else bank.numel(), macs=macs * batch,
                bytes=sum(t.numel() * t.element_size() for t in list(mapping.parameters()) + list(mapping.buffers())))


# ----------------------------------------------------------------------------------------------
# The train.py mapping choice.

def configure_genes(c, opts, training_set):
    """`--mapping=genes`: the gene-bank sampler and mapping, after the --cfg preset (stylegan2 or idgan)."""
    del training_set
    from training import options as host  # the presets' shared helpers and error type
    num_genes = opts.get('genes') or DEFAULTS['genes']
    num_variants = opts.get('variants') or DEFAULTS['variants']
    gene_dim = opts.get('gene_dim')
    w_dim = c.G_kwargs.w_dim
    if gene_dim is None and w_dim % num_genes != 0:
        raise host.UserError(f'--genes={num_genes} does not divide w_dim={w_dim}; pick a divisor (e.g. 16), or '
                             f'give --gene-dim (a linear layer then projects the genes to w_dim).')
    latent = c.get('latent_kwargs')
    code_dim = 0
    code_latent_kwargs = None
    if latent is not None:
        if latent.get('class_name') != 'disentangle.latents.PosteriorBankLatent':
            raise host.UserError(f'--mapping=genes composes with --cfg=stylegan2 and --cfg=idgan, not with '
                                 f'--cfg={opts.cfg}.')
        if latent.get('nuisance_dim'):
            raise host.UserError('--nuisance-dim does not apply with --mapping=genes (the genes carry the nuisance); '
                                 'drop it.')
        code_dim = latent['code_dim']
        code_latent_kwargs = dict(latent, nuisance_dim=0)
    c.latent_kwargs = dnnlib.EasyDict(class_name='disentangle.stylegenes.GeneLatent', num_genes=num_genes,
                                      num_variants=num_variants, code_latent_kwargs=code_latent_kwargs)
    c.G_kwargs.mapping_kwargs = dnnlib.EasyDict(class_name='disentangle.stylegenes.GeneMappingNetwork',
                                                num_genes=num_genes, num_variants=num_variants, gene_dim=gene_dim,
                                                code_dim=code_dim, num_layers=opts.map)


#: Options of train.py this mapping choice reads (train.py rejects them with other --mapping values).
configure_genes.options = ('genes', 'variants', 'gene_dim')

TRAIN_MAPPINGS = {'genes': configure_genes}
