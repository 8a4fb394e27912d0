"""Rules for config values, declared next to what they guard: each algorithm lists its hyperparameters' rules
(`Agent.hyperparameter_rules`), the run builder the rules of the run's own keys. A broken rule is one
ConfigError line that names the key, the value and what it must be."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlrun.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    must_be: str                      # what a valid value is: "a positive number", "one of adam, rmsprop"
    holds: Callable[[Any], bool]
    nullable: bool = False            # null is allowed too (it switches the feature off)
    problem: str = "is invalid: it must be"  # what the error says between the value and must_be


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


NUMBER = Rule("a number", is_number)
UNIT_INTERVAL = Rule("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1)
POSITIVE = Rule("a positive number", lambda v: is_number(v) and v > 0)
NON_NEGATIVE = Rule("a number >= 0", lambda v: is_number(v) and v >= 0)
POSITIVE_INT = Rule("a positive integer", lambda v: is_integer(v) and v > 0)
NON_NEGATIVE_INT = Rule("an integer >= 0", lambda v: is_integer(v) and v >= 0)
BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))


def one_of(names: Any) -> Rule:
    """One of the given names (any iterable of strings, e.g. the keys of a table of choices)."""
    names = tuple(names)
    return Rule(f"one of {', '.join(names)}", lambda v: v in names, problem="is unknown; use")


def optional(rule: Rule) -> Rule:
    return Rule(f"{rule.must_be} or null", rule.holds, nullable=True, problem=rule.problem)


def batch_fits_in_buffer(values: Mapping[str, Any]) -> str | None:
    """A replay algorithm's config check: a minibatch larger than the replay memory is never sampled."""
    batch_size, buffer_size = values.get("batch_size"), values.get("buffer_size")
    if batch_size is None or buffer_size is None or batch_size <= buffer_size:  # a left-out key takes its default
        return None
    return (f"algo.batch_size={batch_size} is larger than algo.buffer_size={buffer_size}: training would never "
            "start; lower algo.batch_size or raise algo.buffer_size")


def check(section: str, values: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """Every value of `values` that has a rule satisfies it; dotted rule names reach into nested sections."""
    for name, rule in rules.items():
        node: Any = values
        for part in name.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            if not ((node is None and rule.nullable) or (node is not None and rule.holds(node))):
                key = f"{section}.{name}" if section else name
                raise ConfigError(f"{key}={node!r} {rule.problem} {rule.must_be}; "
                                  f"fix it on the command line ({key}=...)")
