"""Memory check: SG-MCMC's per-draw diagnostics (``diagnostics.draw_traces``) on full MNIST with a CNN 16,32.

Before ``LogPosterior.full_data`` the full-data log posterior of 20 draws was one vmapped program over all 60 000
images and asked for a 120 GB allocation; now draws run one at a time and the data in chunks of 1000. Prints the
wall time, the peak resident memory and the chunked value against a one-pass value on 5000 images.

    python scripts/check_draw_traces_memory.py [--data-dir DIR]   # or BDLJAX_DATA_DIR
"""
import sys
import resource, time
import jax, numpy as np
from bdljax import data
from bdljax.core import likelihoods, posterior, priors
from bdljax.evaluate import diagnostics
from bdljax.nn import models
mnist = data.load_mnist(sys.argv[sys.argv.index('--data-dir') + 1] if '--data-dir' in sys.argv else None)
x = mnist.x_train.astype(np.float32); y = mnist.y_train
if x.ndim == 3: x = x[..., None]
model = models.cnn(10, (16, 32), 128)
keys = jax.random.split(jax.random.key(0), 20)
samples = jax.tree.map(lambda leaf: leaf[None], jax.vmap(model.init)(keys))  # (C=1, S=20, ...)
log_post = posterior.log_posterior(model.apply, likelihoods.categorical(), priors.gaussian(1.0), num_data=len(x))
tic = time.perf_counter()
traces = diagnostics.draw_traces(log_post, (x, y), samples, model.apply, likelihoods.categorical(), x[:8])
print(f"draw_traces: 20 draws x {len(x)} images in {time.perf_counter() - tic:.1f} s wall, "
      f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB, "
      f"log density finite: {bool(np.all(np.isfinite(traces['log_density'])))}, shape {traces['log_density'].shape}")
# One draw against the one-pass value on the first 5000 images (small enough for one pass).
small = log_post._replace(num_data=5000)
first = jax.tree.map(lambda leaf: leaf[0, 0], samples)
print("chunked vs one pass (5000 images):", float(small.full_data(first, (x[:5000], y[:5000]))), float(small(first, (x[:5000], y[:5000]))))
