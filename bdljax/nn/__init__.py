"""Networks as pure functions: the apply contract and Flax models (``models``), Bayesian layers for local
reparameterisation and Flipout (``bayesian_layers``), recurrent cells (``recurrent``) and where dropout masks act
(``dropout``)."""
