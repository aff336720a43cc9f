"""Steady load: sends at a fixed rate from a thread pool, live and research-mode, SMS and email mixed.

Every attempt carries a reference of its own, so that an attempt answered with an error can still be
looked for in the database afterwards: it must never have been stored (and so never delivered).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from herald.clients import IngestClient

# Recipients the simulator delivers: every accepted message should end `delivered`.
_PHONE = "07700900123"
_EMAIL = "chaos@example.com"
_FIELDS = {"name": "Chaos", "code": "42"}


@dataclass
class Answers:
    """What callers were told, and the references of every attempt by outcome."""

    codes: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, str] = field(default_factory=dict)  # notification id -> reference
    refused: dict[str, str] = field(default_factory=dict)  # reference -> gRPC code name
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def attempts(self) -> int:
        return sum(self.codes.values())


class Load:
    """`rate` sends per second until stop(); a caller slower than the rate holds the next send back
    (at most `concurrency` in flight), so an outage shows as fewer attempts, not a growing backlog."""

    def __init__(
        self, target: str, demo: dict[str, str], tag: str, rate: float, concurrency: int = 32, timeout: float = 10.0
    ) -> None:
        self.answers = Answers()
        self._live = IngestClient(target, demo["live_key"], timeout=timeout)
        self._research = IngestClient(target, demo["research_key"], timeout=timeout)
        self._demo = demo
        self._tag = tag
        self._interval = 1.0 / rate
        self._slots = threading.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"load-{tag}")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{tag}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> Answers:
        self._stopping.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._live.close()
        self._research.close()
        return self.answers

    def _run(self) -> None:
        next_at = time.monotonic()
        for n in itertools.count():
            if self._stopping.is_set():
                return
            while not self._slots.acquire(timeout=0.1):
                if self._stopping.is_set():
                    return
            self._pool.submit(self._send, n)
            next_at += self._interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stopping.wait(delay)
            else:
                next_at = time.monotonic()  # fell behind (slots were full): no burst to catch up

    def _send(self, n: int) -> None:
        reference = f"chaos-{self._tag}-{n}"
        research = n % 4 == 3  # one in four through the research-mode service
        client = self._research if research else self._live
        prefix = "research_" if research else ""
        try:
            if n % 2:
                answer = client.send_email(_EMAIL, self._demo[f"{prefix}email_template_id"], _FIELDS, reference)
            else:
                answer = client.send_sms(_PHONE, self._demo[f"{prefix}sms_template_id"], _FIELDS, reference)
        except grpc.RpcError as exc:
            with self.answers.lock:
                self.answers.codes[exc.code().name] += 1
                self.answers.refused[reference] = exc.code().name
        else:
            with self.answers.lock:
                self.answers.codes["OK"] += 1
                self.answers.accepted[answer.id] = reference
        finally:
            self._slots.release()
