"""skip_nonfinite and keep_draws, on transforms whose every step is known."""

import jax
import jax.numpy as jnp
import numpy as np

from bdljax.core.transform import Transform
from bdljax.methods import ensemble, wrappers


def counter(poison_at=None):
    """A chain whose position after step t is t + 1 (a NaN at step ``poison_at``)."""

    def init(key, params):
        return jnp.asarray(params, jnp.float32)

    def update(state, batch, key):
        new = state + 1.0
        if poison_at is not None:
            new = jnp.where(state == poison_at, jnp.nan, new)
        return new, new

    def sample(state, key, num_samples=1):
        return jnp.broadcast_to(state, (num_samples,))

    return Transform(init, update, sample)


def run(transform, steps, params=0.0):
    state = transform.init(jax.random.key(0), params)
    step = jax.jit(transform.update)
    for t in range(steps):
        state, _ = step(state, None, jax.random.key(t))
    return state


def test_skip_nonfinite_undoes_and_counts_the_poisoned_step():
    guarded = wrappers.skip_nonfinite(counter(poison_at=2.0))
    state = run(guarded, 5)
    # Steps 0, 1 move to 2; every later step from 2 is poisoned and undone.
    assert float(state.inner) == 2.0 and int(state.num_nonfinite) == 3
    assert wrappers.num_nonfinite(state) == 3


def test_keep_draws_keeps_every_thinned_draw_after_burn_in():
    kept = wrappers.keep_draws(counter(), num_kept=3, thinning=2, num_burnin=4)
    state = run(kept, 12)
    # Eligible steps 4..11 (positions 5..12); every second one kept: 6, 8, 10, 12; the buffer holds the last 3.
    np.testing.assert_array_equal(kept.sample(state, None, 3), [8.0, 10.0, 12.0])
    assert int(state.num_stored) == 4


def test_keep_draws_skips_exploration_steps():
    kept = wrappers.keep_draws(counter(), num_kept=2, exploring=lambda step: step < 3)
    state = run(kept, 5)
    np.testing.assert_array_equal(kept.sample(state, None, 2), [4.0, 5.0])


def test_a_skipped_step_keeps_the_unchanged_position_in_its_slot():
    kept = wrappers.keep_draws(wrappers.skip_nonfinite(counter(poison_at=2.0)), num_kept=4)
    state = run(kept, 4)
    np.testing.assert_array_equal(kept.sample(state, None, 4), [1.0, 2.0, 2.0, 2.0])
    assert wrappers.num_nonfinite(state) == 2


def test_wrapped_members_count_for_themselves():
    members = ensemble.build(wrappers.skip_nonfinite(counter(poison_at=1.0)), num_members=3)
    state = run(members, 3, params=jnp.asarray([0.0, 5.0, 10.0]))
    np.testing.assert_array_equal(state.num_nonfinite, [2, 0, 0])
    assert wrappers.num_nonfinite(state) == 2
    assert members.member is not None and wrappers.skip_nonfinite(members).member is None
