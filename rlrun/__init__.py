"""rlrun: a command-line reinforcement-learning experiment runner."""

__version__ = "0.1.0"
