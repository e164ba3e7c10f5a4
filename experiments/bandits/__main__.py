"""``python -m experiments.bandits``: the bandit benchmark's command line (:mod:`experiments.bandits.cli`)."""

from experiments.bandits.cli import main

if __name__ == "__main__":
    main()
