"""prefbench: benchmarks for reinforcement learning from preferences."""

__version__ = "0.1.0"
