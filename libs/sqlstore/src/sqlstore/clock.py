"""The wall clock the stores write into their rows (milliseconds since the epoch); a store
takes it as a parameter, so tests can move time."""

import time
from collections.abc import Callable

Clock = Callable[[], int]


def now_ms() -> int:
    return int(time.time() * 1000)
