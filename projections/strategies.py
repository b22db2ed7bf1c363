"""Moved: the Hypothesis strategies are `backflush.testing.strategies` (``[testing]`` extra).

This alias keeps ``backflush.projections.strategies`` importing for existing tests; new code
imports ``backflush.testing``.
"""

from backflush.testing.strategies import *  # noqa: F403
from backflush.testing.strategies import (  # noqa: F401
    BASE_TIME,
    FAULTS,
    SEQ_STEP,
    History,
    histories,
    normalise,
    plain,
    policies,
    rule_sets,
    rules,
    split_event,
    split_histories,
)
