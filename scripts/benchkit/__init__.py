"""The modules of scripts/bench.py."""
