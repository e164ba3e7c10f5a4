"""How the runner executes a plan on this backend: scanned or chunked steps, members vmapped or in turn.

Measured on XLA:CPU (``scripts/bench_train_cpu.py``, ``scripts/bench_ensemble.py``): a small MLP gains from
``lax.scan`` over steps and from vmapping members (one dispatch instead of
thousands), but a conv net's gradient step runs several times slower inside a
rolled ``lax.scan`` than called unrolled in short chunks (jax-ml/jax#12868),
and a convolution vmapped over member weights becomes a slow grouped
convolution. Accelerators gain from both. So the choice depends on the
backend and on whether the network convolves, which is read from the
network's jaxpr, not guessed from its name. Every run records the choice.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax

MEMBER_EXECUTIONS = ("vmap", "sequential")


class Execution(NamedTuple):
    """``steps_per_call``: ``None`` scans a whole epoch per compiled call; an int runs that many unrolled steps
    per call. ``members``: ``"vmap"`` advances all members of an ensemble (or SG-MCMC chains) in one vmapped
    step; ``"sequential"`` trains them one after another with one compiled member program."""

    steps_per_call: Optional[int] = None
    members: str = "vmap"

    def check(self) -> "Execution":
        if self.members not in MEMBER_EXECUTIONS:
            raise ValueError(f"members={self.members!r}; choose one of {MEMBER_EXECUTIONS}")
        if self.steps_per_call is not None and not (isinstance(self.steps_per_call, int) and self.steps_per_call >= 1):
            raise ValueError(f"steps_per_call must be a positive int or None, got {self.steps_per_call!r}")
        return self


def _sub_jaxprs(value):
    """Jaxprs nested in an equation parameter (scan/while bodies, cond branches, custom-derivative rules)."""
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)
    elif hasattr(value, "eqns"):
        yield value
    elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
        yield value.jaxpr


def _contains_convolution(jaxpr) -> bool:
    for equation in jaxpr.eqns:
        if equation.primitive.name == "conv_general_dilated":
            return True
        if any(_contains_convolution(sub) for value in equation.params.values() for sub in _sub_jaxprs(value)):
            return True
    return False


def convolves(apply, params, x) -> bool:
    """Whether ``apply(params, x)`` runs a convolution (traced abstractly, nothing is computed)."""
    closed = jax.make_jaxpr(lambda p, inputs: apply(p, inputs, rng=None, train=False))(params, x)
    return _contains_convolution(closed.jaxpr)


@functools.lru_cache(maxsize=None)
def _backend() -> str:
    return jax.default_backend()


def choose(apply, params, x, backend: Optional[str] = None) -> Execution:
    """The measured-best execution for this network on ``backend`` (default: JAX's default backend):
    one unrolled step per call and members in turn for a conv net on CPU; scanned epochs and vmapped members
    otherwise."""
    backend = backend or _backend()
    if backend == "cpu" and convolves(apply, params, x):
        return Execution(steps_per_call=1, members="sequential")
    return Execution()
