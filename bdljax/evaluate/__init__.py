"""Scores of posterior predictives, by family: ``regression``, ``classification``, ``uncertainty`` (entropies,
mutual information, acquisition functions), ``ood`` (AUROC, AUPR) and MCMC ``diagnostics``."""
