"""Contextual bandits solved by Thompson sampling with bdljax posteriors: the benchmark of Riquelme, Tucker &
Snoek (2018), "Deep Bayesian Bandits Showdown" (ICLR), as an application on top of the library.

Run it from the repository root with ``python -m experiments.bandits --help``. The package reads top to bottom:

* :mod:`~experiments.bandits.environments`: the wheel and mushroom bandits as pure JAX functions.
* :mod:`~experiments.bandits.linear`: exact Bayesian linear regression (Normal–Inverse-Gamma) per arm.
* :mod:`~experiments.bandits.networks`: the MLP with one output per arm, and its variants.
* :mod:`~experiments.bandits.log_posterior`: the log posterior of the played arms' rewards on a growing data set.
* :mod:`~experiments.bandits.agents`: Thompson-sampling agents (random, linear, over any bdljax transform,
  NeuralLinear).
* :mod:`~experiments.bandits.settings`: the agents' shared hyperparameters and the per-bandit defaults.
* :mod:`~experiments.bandits.registry`: every agent by name, composed from bdljax methods.
* :mod:`~experiments.bandits.simulation`: a whole run as one compiled program, vmapped over seeds.
* :mod:`~experiments.bandits.report` and :mod:`~experiments.bandits.cli`: scores, tables, figures, the command line.
"""
