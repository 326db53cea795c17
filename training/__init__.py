"""Training: shared unsupervised core, SALCR and SDCL methods, evaluation protocols."""
