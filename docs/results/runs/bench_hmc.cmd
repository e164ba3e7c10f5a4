python scripts/bench_hmc.py --skip-nuts --skip-mixing
