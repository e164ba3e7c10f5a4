"""bdljax: Bayesian deep learning in JAX.

One log posterior (:mod:`bdljax.posterior`) over any network
(:mod:`bdljax.models`), likelihood (:mod:`bdljax.likelihoods`) and prior
(:mod:`bdljax.priors`); inference methods as interchangeable transforms
(:mod:`bdljax.transform`), one file each; one predictive
(:mod:`bdljax.predictive`) and one metrics module (:mod:`bdljax.metrics`).
"""

from bdljax import likelihoods, models, posterior, predictive, priors, transform
from bdljax.posterior import LogPosterior, log_posterior
from bdljax.transform import Transform

__version__ = "0.1.0"

__all__ = ["likelihoods", "models", "posterior", "predictive", "priors", "transform", "LogPosterior", "log_posterior", "Transform"]
