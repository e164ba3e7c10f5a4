"""The core: the inference protocol (``transform``), the one log posterior (``posterior``), likelihoods, priors and
pytree helpers (``tree``). Everything else in bdljax is built on these."""
