"""Running plans: what a recipe returns (``plan``), the runner (``runner.execute``), compiled epochs (``training``),
compiled chains (``chains``), many runs as one program (``batched``), the backend's execution choice
(``execution``), the posterior predictive (``predictive``) and run directories (``rundir``)."""
