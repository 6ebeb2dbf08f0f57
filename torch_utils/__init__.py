"""torch_utils: persistence, misc, training_stats and ops, with the module paths of StyleGAN2-ADA's package."""
