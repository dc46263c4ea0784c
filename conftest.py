"""Pytest setup: one thread per process keeps the suite fast on a 2-core machine."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
