"""StyleGAN2 loss: non-saturating logistic loss, lazy R1, lazy path length, style mixing, and
pluggable extra loss terms (seam 3 of docs/ARCHITECTURE.md).

Phases follow StyleGAN2-ADA: 'Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth'. The training
loop calls `accumulate_gradients(phase, ...)` once per `batch_gpu` round and steps the optimiser
of the phase afterwards; regularisation phases receive `gain = interval` (lazy regularisation).

Extra loss terms are objects constructed by class name (plug-ins live outside this package). A
term subclasses `LossTerm` and overrides what it needs; its `g_loss(ctx)` is added to G's main loss,
its `d_loss(ctx)` to D's loss on fakes. Terms see everything through `ctx` and never touch the
training loop.

`compile_main_phases()` (train.py --compile=1) runs G's synthesis network and D through
`torch.compile` in the main phases only. The regularisation phases differentiate twice (R1,
path length), which compiled graphs do not support, so they keep the eager modules; both share
the same parameters, and snapshots pickle the eager modules.
"""

import numpy as np
import torch

import dnnlib
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix


class LossTerm:
    """Base class of pluggable loss terms. All hooks are optional."""

    #: Set to True when d_loss/g_loss need D's penultimate features of the images it judges.
    needs_d_features = False

    def modules(self):
        """name -> torch.nn.Module owned by the term (written into snapshots under that key)."""
        return {}

    def extra_parameters(self, net_name):
        """Parameters optimised together with 'G' or 'D' (e.g. a head on D's trunk)."""
        return []

    def g_loss(self, ctx):
        """Extra generator loss (tensor [N] or scalar), or None. Called in Gmain/Gboth."""
        return None

    def d_loss(self, ctx):
        """Extra discriminator loss on fakes (tensor [N] or scalar), or None. Called in Dmain/Dboth."""
        return None

    def state_dict(self):
        """Everything needed to resume exactly (own optimisers, schedules)."""
        return {}

    def load_state_dict(self, state):
        pass


def autocast_context(device, dtype):
    """torch.autocast for `dtype` (bf16/fp16) on the device's type, or a no-op for fp32/None."""
    enabled = dtype is not None and dtype != torch.float32
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype if enabled else None,
                          enabled=enabled)


def compile_module(module, device):
    """`torch.compile(module)`, or None after printing why where torch.compile cannot run here.

    A tiny function is compiled and run first on `device`: the default inductor backend needs a
    working C++ compiler for CPU code and Triton for CUDA, and it fails only at the first call.
    """
    import torch._dynamo
    try:
        probe = torch.compile(lambda x: torch.nn.functional.leaky_relu(x * 2 + 1, 0.2).sum(), dynamic=False)
        probe(torch.ones([8], device=device))
    except Exception as err:  # whatever the backend raises, training goes on eagerly
        reason = f'{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}'
        print(f'--compile: torch.compile does not work on {torch.device(device)} here ({reason[:300]}); '
              f'training continues without it (install a C++ compiler for CPU, Triton for CUDA).')
        return None
    # Every layer of a resolution is a new shape and is compiled on its own between graph breaks;
    # the default limit of 8 versions per code object would silently drop the rest to eager.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    # Shapes are fixed per phase: no dynamic-shape kernels after the first shape change.
    return torch.compile(module, dynamic=False)


class StyleGAN2Loss:
    def __init__(self, device, G, D, augment_pipe=None, latent_sampler=None, style_mixing_prob=0.9,
                 r1_gamma=10, pl_batch_shrink=2, pl_decay=0.01, pl_weight=2, extra_terms=(),
                 amp_dtype=None):
        self.device = torch.device(device)
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.latent_sampler = latent_sampler
        self.style_mixing_prob = float(style_mixing_prob)
        self.r1_gamma = float(r1_gamma)
        self.pl_batch_shrink = int(pl_batch_shrink)
        self.pl_decay = float(pl_decay)
        self.pl_weight = float(pl_weight)
        self.extra_terms = list(extra_terms)
        self.amp_dtype = amp_dtype
        self.pl_mean = torch.zeros([], device=self.device)
        self.needs_d_features = any(t.needs_d_features for t in self.extra_terms)
        self.on_real_logits = None  # set by the training loop to feed adaptive augmentation
        # What the main phases (Gmain, Dmain) call; compile_main_phases() swaps in compiled wrappers.
        self.synthesis_main = G.synthesis
        self.D_main = D
        self.compiled = False

    def compile_main_phases(self):
        """Use torch.compile'd G.synthesis and D in Gmain and Dmain (not in Greg, Dreg, or a
        Dboth/Gboth phase, which need double backward). Returns whether it is compiled."""
        synthesis = compile_module(self.G.synthesis, self.device)
        D = compile_module(self.D, self.device) if synthesis is not None else None
        if synthesis is not None and D is not None:
            self.synthesis_main, self.D_main, self.compiled = synthesis, D, True
        return self.compiled

    # -- state for exact resume -------------------------------------------------------------
    def state_dict(self):
        return dict(pl_mean=self.pl_mean.detach().cpu().clone(),
                    terms=[term.state_dict() for term in self.extra_terms])

    def load_state_dict(self, state):
        self.pl_mean.copy_(state['pl_mean'].to(self.device))
        for term, term_state in zip(self.extra_terms, state.get('terms', [])):
            term.load_state_dict(term_state)

    # -- forward passes -----------------------------------------------------------------------
    def run_G(self, latents, c, update_emas=True, main=False):
        """Render a batch from sampler output `latents` (EasyDict with `z`). Returns (img, ws).

        `main`: a main phase, which may use the compiled synthesis network (no double backward).
        """
        z = latents.z
        with autocast_context(self.device, self.amp_dtype):
            ws = self.G.mapping(z, c, skip_w_avg_update=not update_emas)
            if self.style_mixing_prob > 0 and ws.shape[1] > 1:
                with torch.autograd.profiler.record_function('style_mixing'):
                    # A second latent from the same sampler, not randn_like(z): plug-in latents
                    # (codes, gene indices) are not Gaussian.
                    mix = self.latent_sampler.sample(z.shape[0], device=z.device).z
                    cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
                    use_mix = torch.rand([], device=ws.device) < self.style_mixing_prob
                    cutoff = torch.where(use_mix, cutoff, torch.full_like(cutoff, ws.shape[1]))
                    ws_mix = self.G.mapping(mix, c, skip_w_avg_update=True)
                    layer = torch.arange(ws.shape[1], device=ws.device)[None, :, None]
                    ws = torch.where(layer < cutoff, ws, ws_mix)
            img = (self.synthesis_main if main else self.G.synthesis)(ws)
        return img.float(), ws

    def run_D(self, img, c, return_features=False, main=False):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        D = self.D_main if main else self.D
        with autocast_context(self.device, self.amp_dtype):
            # Plain D(img, c) unless features are asked for: official discriminators loaded from
            # StyleGAN2-ADA pickles know no other keyword.
            out = D(img, c, return_features=True) if return_features else D(img, c)
        if return_features:
            logits, features = out
            return logits.float(), features.float()
        return out.float(), None

    # -- phases ---------------------------------------------------------------------------------
    def accumulate_gradients(self, phase, real_img, real_c, gen_latents, gen_c, gain, cur_nimg):
        assert phase in ['Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth']
        do_Gmain = phase in ['Gmain', 'Gboth']
        do_Dmain = phase in ['Dmain', 'Dboth']
        do_Gpl = phase in ['Greg', 'Gboth'] and self.pl_weight != 0
        do_Dr1 = phase in ['Dreg', 'Dboth'] and self.r1_gamma != 0

        if do_Gmain:
            with torch.autograd.profiler.record_function('Gmain_forward'):
                gen_img, gen_ws = self.run_G(gen_latents, gen_c, main=True)
                gen_logits, gen_features = self.run_D(gen_img, gen_c, return_features=self.needs_d_features, main=True)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_G = torch.nn.functional.softplus(-gen_logits).flatten()  # -log(sigmoid(D(G(z))))
                training_stats.report('Loss/G/loss', loss_G)
                ctx = dnnlib.EasyDict(phase='G', gen_img=gen_img, gen_ws=gen_ws, gen_c=gen_c,
                                      latents=gen_latents, gen_logits=gen_logits,
                                      gen_features=gen_features, cur_nimg=cur_nimg, G=self.G,
                                      D=self.D, loss=self)
                for term in self.extra_terms:
                    extra = term.g_loss(ctx)
                    if extra is not None:
                        loss_G = loss_G + extra
                if self.extra_terms:
                    training_stats.report('Loss/G/total', loss_G)
            with torch.autograd.profiler.record_function('Gmain_backward'):
                loss_G.mean().mul(gain).backward()

        if do_Gpl:
            with torch.autograd.profiler.record_function('Gpl_forward'):
                batch_size = max(gen_latents.z.shape[0] // self.pl_batch_shrink, 1)
                shrunk = dnnlib.EasyDict({k: v[:batch_size] for k, v in gen_latents.items()})
                gen_img, gen_ws = self.run_G(shrunk, gen_c[:batch_size])
                # Noise scaled by 1/sqrt(pixels) so the length does not depend on the resolution.
                pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
                with conv2d_gradfix.no_weight_gradients():
                    pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                                   create_graph=True, only_inputs=True)[0]
                pl_lengths = pl_grads.float().square().sum(2).mean(1).sqrt()
                pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
                self.pl_mean.copy_(pl_mean.detach())
                pl_penalty = (pl_lengths - pl_mean).square()
                training_stats.report('Loss/pl_penalty', pl_penalty)
                loss_Gpl = pl_penalty * self.pl_weight
                training_stats.report('Loss/G/reg', loss_Gpl)
            with torch.autograd.profiler.record_function('Gpl_backward'):
                # The zero-weighted image term keeps every synthesis parameter in the graph.
                (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

        if do_Dmain:
            with torch.autograd.profiler.record_function('Dgen_forward'):
                with torch.no_grad():
                    gen_img, gen_ws = self.run_G(gen_latents, gen_c, update_emas=False, main=True)
                gen_img = gen_img.detach()
                gen_logits, gen_features = self.run_D(gen_img, gen_c, return_features=self.needs_d_features, main=True)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_Dgen = torch.nn.functional.softplus(gen_logits).flatten()  # -log(1 - sigmoid(D(G(z))))
                ctx = dnnlib.EasyDict(phase='D', gen_img=gen_img, gen_ws=gen_ws.detach(), gen_c=gen_c,
                                      latents=gen_latents, gen_logits=gen_logits,
                                      gen_features=gen_features, cur_nimg=cur_nimg, G=self.G,
                                      D=self.D, loss=self)
                for term in self.extra_terms:
                    extra = term.d_loss(ctx)
                    if extra is not None:
                        loss_Dgen = loss_Dgen + extra
                if self.extra_terms:
                    training_stats.report('Loss/D/total_fake', loss_Dgen)
            with torch.autograd.profiler.record_function('Dgen_backward'):
                loss_Dgen.mean().mul(gain).backward()

        if do_Dmain or do_Dr1:
            name = 'Dreal_Dr1' if do_Dmain and do_Dr1 else 'Dreal' if do_Dmain else 'Dr1'
            with torch.autograd.profiler.record_function(name + '_forward'):
                real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
                real_logits, _ = self.run_D(real_img_tmp, real_c, main=not do_Dr1)
                training_stats.report('Loss/scores/real', real_logits)
                training_stats.report('Loss/signs/real', real_logits.sign())
                if self.on_real_logits is not None:
                    self.on_real_logits(real_logits.detach())
                loss_Dreal = 0
                if do_Dmain:
                    loss_Dreal = torch.nn.functional.softplus(-real_logits).flatten()  # -log(sigmoid(D(x)))
                    training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                loss_Dr1 = 0
                if do_Dr1:
                    with conv2d_gradfix.no_weight_gradients():
                        r1_grads = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp],
                                                       create_graph=True, only_inputs=True)[0]
                    r1_penalty = r1_grads.float().square().sum([1, 2, 3])
                    loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                    training_stats.report('Loss/r1_penalty', r1_penalty)
                    training_stats.report('Loss/D/reg', loss_Dr1)
            with torch.autograd.profiler.record_function(name + '_backward'):
                (real_logits.flatten() * 0 + loss_Dreal + loss_Dr1).mean().mul(gain).backward()
