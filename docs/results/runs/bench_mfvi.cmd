python scripts/bench_mfvi.py --no-torch --repeats 3
