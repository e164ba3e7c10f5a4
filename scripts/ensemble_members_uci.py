"""Per-member test RMSE of one UCI deep-ensemble fit: finds diverged members that the mixture's log-likelihood hides.

The mixture log-likelihood is a log-mean-exp, so one bad member of K costs at most log(K/(K-1)) nats; its RMSE
shows. Fits the ``ensemble`` protocol of ``experiments/uci.py`` (heteroscedastic members, Adam, batch 100, 40
epochs) on one split and prints each member's RMSE in original units and the first/last training records.
``--validation`` scores on the split's validation part (the 80/20 cut of its training split the protocol
selects on) instead of its test part, so a learning rate can be chosen without test data.

    python scripts/ensemble_members_uci.py --dataset naval-propulsion-plant --split 4 --learning-rate 0.01 --validation
"""
import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

if not __package__:  # run as a file (python scripts/ensemble_members_uci.py): import experiments/ as `python -m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bdljax import data, recipes  # noqa: E402
from bdljax.run import predictive  # noqa: E402
from experiments import uci  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--prior-scale", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation", action="store_true", help="score on the validation part, not the test part")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    dataset = data.load_uci(args.dataset, args.data_dir)
    split = uci.prepare_splits(dataset, [args.split], args.seed, 0.2)[0]
    part = split.validation if args.validation else split.train
    config = {"prior_scale": args.prior_scale, "num_members": 5, "batch_size": 100, "optimizer": "adam",
              "learning_rate": args.learning_rate, "num_epochs": 40}
    protocol = uci.protocol_for("ensemble")
    problem = uci.build_problem(protocol, config, dataset, part.x_train, part.y_train)
    start = time.perf_counter()
    fitted = recipes.run("ensemble", problem, jax.random.key(args.split),
                         **uci.recipe_hyperparameters("ensemble", config))
    seconds = time.perf_counter() - start
    outputs = predictive.predictive_outputs(fitted.apply, fitted.samples, jnp.asarray(part.x_test))
    means = np.asarray(outputs[..., 0]) * part.y_std + part.y_mean
    y = np.asarray(part.y_test).reshape(-1) * part.y_std + part.y_mean
    print(f"{args.dataset} split {args.split}, lr {args.learning_rate}, scored on "
          f"{'validation' if args.validation else 'test'} ({len(y)} points), fit {seconds:.1f} s")
    print("per-member RMSE", [round(float(r), 4) for r in np.sqrt(np.mean((means - y) ** 2, axis=1))])
    print("mixture-mean RMSE", round(float(np.sqrt(np.mean((means.mean(0) - y) ** 2))), 4))
    for record in (fitted.history[0], fitted.history[-1]):
        print({k: round(v, 1) if isinstance(v, float) else v for k, v in record.items()})


if __name__ == "__main__":
    main()
