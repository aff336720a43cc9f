"""Which SMS provider gets the next message: weighted choice, failover, and Notify's provider switching.

Each provider's recent hand-offs (within ``window_seconds``) are kept. Once a provider has at least
``min_samples`` of them and its error ratio reaches ``error_ratio_threshold`` or its mean answer time
reaches ``latency_threshold_seconds``, it leaves the rotation for ``cooldown_seconds`` and then comes
back with a clean record. The last provider in rotation never leaves: a message must go somewhere.
Every switch is logged (one line, no personal data) and reported to ``on_switch``.

Pure and thread-safe: no I/O but the log line, time from the injected ``clock``.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# (provider name, now in rotation, reason) for every switch.
OnSwitch = Callable[[str, bool, str], None]


def parse_weights(text: str) -> dict[str, int]:
    """``"mmg=50,firetext=50"`` -> ``{"mmg": 50, "firetext": 50}`` (the ``sms_provider_weights`` setting)."""
    weights: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, weight = item.partition("=")
        name = name.strip()
        if not sep or not name or name in weights:
            raise ValueError(f"provider weights: expected distinct name=weight pairs, got {item.strip()!r}")
        try:
            weights[name] = int(weight)
        except ValueError as exc:
            raise ValueError(f"provider weights: {name}'s weight {weight.strip()!r} is not an integer") from exc
    return weights


@dataclass(slots=True)
class _Bucket:
    """The hand-offs of one span of the window, summed: kept one by one, a 60 s window held 12 MB at
    2,000 hand-offs a second; in buckets it holds about 60 whatever the rate."""

    started: float
    latest: float
    count: int
    errors: int
    seconds: float


@dataclass(slots=True)
class _Provider:
    weight: int
    # Recent hand-offs, oldest first, with running sums so that a hand-off costs O(1) however many the
    # window holds. A bucket leaves once its latest hand-off is out of the window: a hand-off may be
    # counted up to one span (a sixtieth of the window) longer than the window.
    buckets: deque[_Bucket] = field(default_factory=deque)
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    # When a provider out of rotation comes back; None while in rotation.
    back_at: float | None = None

    def add(self, now: float, ok: bool, seconds: float, oldest: float, span: float) -> None:
        """Add a hand-off and forget those taken at or before ``oldest``."""
        last = self.buckets[-1] if self.buckets else None
        if last is not None and now - last.started < span:
            last.latest = max(last.latest, now)  # callers read the clock before the lock: out of order by a hair
            last.count += 1
            last.errors += not ok
            last.seconds += seconds
        else:
            self.buckets.append(_Bucket(now, now, 1, int(not ok), seconds))
        self.count += 1
        self.errors += not ok
        self.seconds += seconds
        while self.buckets[0].latest <= oldest:
            gone = self.buckets.popleft()
            self.count -= gone.count
            self.errors -= gone.errors
            self.seconds -= gone.seconds

    def clear(self) -> None:
        self.buckets.clear()
        self.count = 0
        self.errors = 0
        self.seconds = 0.0


@dataclass(frozen=True, slots=True)
class _Switch:
    name: str
    in_rotation: bool
    reason: str
    error_ratio: float
    mean_seconds: float
    samples: int


class ProviderRotation:
    def __init__(
        self,
        names_and_weights: Mapping[str, int],
        *,
        window_seconds: float = 60.0,
        error_ratio_threshold: float = 0.5,
        latency_threshold_seconds: float = 5.0,
        cooldown_seconds: float = 60.0,
        min_samples: int = 10,
        clock: Callable[[], float] = time.monotonic,
        on_switch: OnSwitch | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not names_and_weights:
            raise ValueError("provider rotation needs at least one provider")
        if any(weight < 0 for weight in names_and_weights.values()):
            raise ValueError("provider weights must not be negative")
        if window_seconds <= 0 or cooldown_seconds < 0 or min_samples < 1:
            raise ValueError("window_seconds must be positive, cooldown_seconds not negative, min_samples >= 1")
        if not 0 < error_ratio_threshold <= 1 or latency_threshold_seconds <= 0:
            raise ValueError("error_ratio_threshold must be in (0, 1], latency_threshold_seconds positive")
        self._providers = {name: _Provider(weight) for name, weight in names_and_weights.items()}
        self._window = window_seconds
        self._span = window_seconds / 60  # a bucket's: see _Provider
        self._error_ratio_threshold = error_ratio_threshold
        self._latency_threshold = latency_threshold_seconds
        self._cooldown = cooldown_seconds
        self._min_samples = min_samples
        self._clock = clock
        self._on_switch = on_switch
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        # What choose draws from, per excluded name: (names, cumulative weights), or (names, None) when
        # none has a weight. Built on first use, forgotten on every switch: a hand-off only looks it up.
        self._draws: dict[str | None, tuple[list[str], list[int] | None]] = {}
        self._out = 0  # providers out of rotation now: while none is, nothing can come back

    @property
    def names(self) -> list[str]:
        return list(self._providers)

    def in_rotation(self) -> list[str]:
        """The providers in rotation now (a provider whose cooldown is over counts as back)."""
        with self._lock:
            switches = self._bring_back(self._clock())
            names = [name for name, p in self._providers.items() if p.back_at is None]
        self._announce(switches)
        return names

    def choose(self, exclude: str | None = None) -> str:
        """A provider by weight among those in rotation, other than ``exclude`` when there is another.

        Weight 0 is a standby: chosen only when no provider with a weight is available.
        """
        with self._lock:
            switches = self._bring_back(self._clock()) if self._out else []
            draw = self._draws.get(exclude) or self._draw(exclude)
        if switches:
            self._announce(switches)
        names, cumulative = draw
        if cumulative is None:
            return self._rng.choice(names)
        chosen: str = self._rng.choices(names, cum_weights=cumulative)[0]
        return chosen

    def _draw(self, exclude: str | None) -> tuple[list[str], list[int] | None]:
        """What choose draws from while the rotation stays as it is; lock held."""
        available = [(name, p.weight) for name, p in self._providers.items() if p.back_at is None]
        others = [(name, weight) for name, weight in available if name != exclude]
        candidates = others or available
        weighted = [(name, weight) for name, weight in candidates if weight > 0]
        draw: tuple[list[str], list[int] | None]
        if weighted:
            draw = ([name for name, _ in weighted], list(itertools.accumulate(weight for _, weight in weighted)))
        else:
            draw = ([name for name, _ in candidates], None)
        self._draws[exclude] = draw
        return draw

    def record(self, name: str, ok: bool, seconds: float) -> None:
        """One hand-off to ``name``: whether the provider took it, and how long its answer took.

        A hand-off still in flight when its provider left the rotation is not counted: the provider
        comes back with a clean record.
        """
        now = self._clock()
        with self._lock:
            switches = self._bring_back(now) if self._out else []
            provider = self._providers.get(name)
            if provider is None:
                raise KeyError(f"unknown provider {name!r}")
            if provider.back_at is None:
                provider.add(now, ok, seconds, now - self._window, self._span)
                if provider.count >= self._min_samples:
                    switch = self._maybe_take_out(name, provider, now)
                    if switch is not None:
                        switches.append(switch)
        if switches:
            self._announce(switches)

    def _maybe_take_out(self, name: str, provider: _Provider, now: float) -> _Switch | None:
        """Take ``provider`` out if its record crossed a threshold and another remains; lock held."""
        count = provider.count
        error_ratio = provider.errors / count
        mean_seconds = provider.seconds / count
        if error_ratio >= self._error_ratio_threshold:
            reason = "error_ratio"
        elif mean_seconds >= self._latency_threshold:
            reason = "latency"
        else:
            return None
        if not any(p.back_at is None for other, p in self._providers.items() if other != name):
            return None
        provider.back_at = now + self._cooldown
        self._out += 1
        self._draws.clear()
        return _Switch(name, False, reason, error_ratio, mean_seconds, count)

    def _bring_back(self, now: float) -> list[_Switch]:
        """Put back every provider whose cooldown is over; lock held."""
        switches: list[_Switch] = []
        for name, provider in self._providers.items():
            if provider.back_at is not None and now >= provider.back_at:
                provider.back_at = None
                provider.clear()
                self._out -= 1
                self._draws.clear()
                switches.append(_Switch(name, True, "cooldown_over", 0.0, 0.0, 0))
        return switches

    def _announce(self, switches: list[_Switch]) -> None:
        # Outside the lock: the callback may take its own locks (metrics) or call back in.
        for switch in switches:
            logger.log(
                logging.INFO if switch.in_rotation else logging.WARNING,
                "provider %s %s rotation: %s",
                switch.name,
                "back in" if switch.in_rotation else "out of",
                switch.reason,
                extra={
                    "provider": switch.name,
                    "in_rotation": switch.in_rotation,
                    "reason": switch.reason,
                    "error_ratio": round(switch.error_ratio, 3),
                    "mean_seconds": round(switch.mean_seconds, 3),
                    "samples": switch.samples,
                    "cooldown_seconds": self._cooldown,
                },
            )
            if self._on_switch is not None:
                self._on_switch(switch.name, switch.in_rotation, switch.reason)
