"""bdljax: Bayesian deep learning in JAX.

One log posterior (:mod:`bdljax.core.posterior`) over any network
(:mod:`bdljax.nn.models`), likelihood (:mod:`bdljax.core.likelihoods`) and prior
(:mod:`bdljax.core.priors`); inference methods as interchangeable transforms
(:mod:`bdljax.core.transform`), one file each; one predictive
(:mod:`bdljax.run.predictive`) and metrics by family (:mod:`bdljax.evaluate`).
"""

from bdljax.core import likelihoods, posterior, priors, transform
from bdljax.nn import models
from bdljax.run import predictive
from bdljax.core.posterior import LogPosterior, log_posterior
from bdljax.core.transform import Transform

__version__ = "0.1.0"

__all__ = ["likelihoods", "models", "posterior", "predictive", "priors", "transform", "LogPosterior", "log_posterior", "Transform"]
