"""rlrun: a command-line reinforcement-learning experiment runner.

`rlrun.load_agent(path)` returns an agent saved by a run (a checkpoint or a run folder), ready to act.
"""

from rlrun.evaluate import load_agent

__all__ = ["load_agent"]
__version__ = "0.1.0"
