"""A lease held in the MLflow model registry: one promotion at a time, across every machine.

MLflow has no compare-and-set, but creating a registered model is atomic: creating a name that
exists fails with RESOURCE_ALREADY_EXISTS (a unique key in the tracking server's database). The
lease is a *generation*: the registered model ``<model>.lease.<g>``, and the highest generation
that exists is the current one. Whoever creates it holds it (its ``holder`` tag says who);
releasing it deletes it. So that only one waiter can take over, a waiter never deletes the
current generation to replace it: it creates the next one (``g + 1``), which exactly one of the
waiters that try manages, and the winner then deletes the generations below its own.

Expiry is judged without comparing clocks. The holder renews its generation every
``seconds / 3`` by updating its description, which moves the registry server's
``last_updated_timestamp``; a waiter takes over only after watching that timestamp stay the same
for ``seconds`` of its own monotonic clock. Right before it moves an alias, the holder proves it
still holds the lease: it renews, checks that its generation is still the highest with its name on
it, and moves only if that renewal is younger than ``seconds - margin`` (else it gives up and says
so); a successful renewal means no waiter can take over within ``seconds`` of it.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from semisep.pipeline.errors import SemisepError

SUFFIX = ".lease"


def _generation_name(model: str, generation: int) -> str:
    return f"{model}{SUFFIX}.{generation}"


def generations(client, model: str) -> dict[int, object]:
    """generation -> registered model, for every ``<model>.lease.<g>`` that exists."""
    prefix = model + SUFFIX + "."
    pattern = re.compile(re.escape(prefix) + r"(\d+)")
    like = prefix.replace("'", "''")
    found = {}
    for m in client.search_registered_models(filter_string=f"name LIKE '{like}%'", max_results=1000):
        match = pattern.fullmatch(m.name)
        if match:
            found[int(match[1])] = m
    return found


class Lease:
    """A held generation of the lease. ``prove`` before moving an alias; ``still_held`` to look."""

    def __init__(self, client, tracking_uri: str, model: str, generation: int, holder: str, seconds: float,
                 margin: float):
        self.client, self.tracking_uri, self.model = client, tracking_uri, model
        self.generation, self.holder, self.seconds, self.margin = generation, holder, seconds, margin
        self.name = _generation_name(model, generation)
        self.renewed_at = time.monotonic()  # local monotonic time of the last acknowledged renewal
        self._renewals = 0
        self._lock = threading.Lock()

    def renew(self) -> bool:
        """Move the server's timestamp of our generation, then check it is still ours and the
        highest. True when held; the renewal time counts from before the call (conservative)."""
        from semisep.evaluation.registry import is_absent, registry_error

        with self._lock:
            started = time.monotonic()
            self._renewals += 1
            try:
                self.client.update_registered_model(self.name, description=self._description())
                held = self.client.get_registered_model(self.name).tags.get("holder") == self.holder
                held = held and max(generations(self.client, self.model), default=0) == self.generation
            except Exception as exc:  # noqa: BLE001
                # deleted by a waiter that took over, also mid-update (a store may then report 0 rows matched)
                if is_absent(exc) or not self._exists():
                    return False
                raise registry_error(self.tracking_uri, f"the promotion lease {self.name!r}", exc) from None
            if held:
                self.renewed_at = started
            return held

    def _exists(self) -> bool:
        from semisep.evaluation.registry import is_absent, registry_error

        try:
            self.client.get_registered_model(self.name)
            return True
        except Exception as exc:  # noqa: BLE001
            if is_absent(exc):
                return False
            raise registry_error(self.tracking_uri, f"the promotion lease {self.name!r}", exc) from None

    def still_held(self) -> bool:
        return self.renew()

    def prove(self, what: str) -> None:
        """Raise ``lease_lost`` unless the lease is held now with at least ``margin`` seconds left
        before any waiter could take it over: call right before ``what`` (an alias move)."""
        if not self.renew() or time.monotonic() - self.renewed_at > self.seconds - self.margin:
            raise lease_lost(self, what)

    def _description(self) -> str:
        return (f"semisep's promotion lease for {self.model!r}, generation {self.generation}, held by {self.holder} "
                f"while a promotion or rollback reads and moves its aliases (renewal {self._renewals}); deleted "
                "when it is done")


def _exists(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS"


@contextmanager
def registry_lease(client, tracking_uri: str, model: str, seconds: float, poll_s: float = 1.0, say=None,
                   margin: float | None = None, renew: bool = True):
    """Hold the lease of ``model`` for the block: wait while a live holder has it, take over one
    whose timestamp has not moved for ``seconds``. ``margin`` (default a third of ``seconds``) is
    what ``Lease.prove`` keeps in hand; ``renew=False`` leaves out the renewing thread (tests).

    Raises SemisepError when the registry cannot be reached (nothing was changed then)."""
    from semisep.evaluation.registry import is_absent, registry_error

    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    margin = seconds / 3 if margin is None else margin
    watched: dict[int, tuple] = {}  # generation -> (what the server said, local monotonic time first seen)
    told = False
    while True:
        try:
            current = generations(client, model)
        except Exception as exc:  # noqa: BLE001
            raise registry_error(tracking_uri, f"the promotion lease of {model!r}", exc) from None
        top = max(current, default=0)
        broken = None
        if top:
            m = current[top]
            seen = (m.last_updated_timestamp, m.description)
            if watched.get(top, (None,))[0] != seen:
                watched[top] = (seen, time.monotonic())
            if time.monotonic() - watched[top][1] < seconds:
                if not told and say:
                    say(f"waiting for the promotion lease {m.name!r}, held by {m.tags.get('holder')}")
                    told = True
                time.sleep(poll_s)
                continue
            broken = m.tags.get("holder")
        name = _generation_name(model, top + 1)
        try:
            client.create_registered_model(name, tags={"holder": holder, "generation": str(top + 1)},
                                           description=f"semisep's promotion lease for {model!r}")
        except Exception as exc:  # noqa: BLE001
            if _exists(exc):
                continue  # another waiter took this generation: look again
            raise registry_error(tracking_uri, f"the promotion lease {name!r}", exc) from None
        if broken is not None:
            (say or print)(f"took over the promotion lease of {broken} (no renewal for {seconds:g} s)")
        for old in current:  # released or broken: only the highest generation counts, the rest is clutter
            try:
                client.delete_registered_model(_generation_name(model, old))
            except Exception:  # noqa: BLE001 - gone already, or left for the next holder to delete
                pass
        break
    lease = Lease(client, tracking_uri, model, top + 1, holder, seconds, margin)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(seconds / 3):
            try:
                lease.renew()
            except Exception:  # noqa: BLE001 - prove() before each move says if the lease was lost
                pass

    renewer = threading.Thread(target=keep_renewing, daemon=True)
    if renew:
        renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        if renew:
            renewer.join()
        try:
            if lease.client.get_registered_model(lease.name).tags.get("holder") == holder:
                client.delete_registered_model(lease.name)
        except Exception:  # noqa: BLE001 - an unreleased lease is taken over after ``seconds``
            pass


def lease_lost(lease: Lease, what: str) -> SemisepError:
    return SemisepError(f"the promotion lease {lease.name!r} was taken over by another promotion, or could not be "
                        f"renewed in time, before {what} (held for {lease.seconds:g} s, promote.lease_seconds); "
                        "nothing was moved: check the aliases of the registered model in the MLflow UI and promote "
                        "again")
