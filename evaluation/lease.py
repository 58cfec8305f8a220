"""A lease held in the MLflow model registry: one promotion at a time, across every machine.

MLflow has no compare-and-set, but creating a registered model is atomic: creating a name that
exists fails with RESOURCE_ALREADY_EXISTS (a unique key in the tracking server's database). The
lease is the registered model ``<model>.lease``: whoever creates it holds it (its tags say who
and until when), and releasing it deletes it. The holder renews the expiry while it works; a
lease past its expiry belongs to a holder that died and is broken by the next one to want it.
Every process that reaches the tracking server sees the same lease, which a file lock on shared
storage does not give (``flock`` excludes nothing across machines on many network and FUSE
mounts). The holder checks the lease again after moving the aliases.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager

from semisep.pipeline.errors import SemisepError

SUFFIX = ".lease"


class Lease:
    """A held lease: ``still_held()`` re-reads it from the registry."""

    def __init__(self, client, tracking_uri: str, name: str, holder: str, seconds: float):
        self.client, self.tracking_uri, self.name, self.holder, self.seconds = client, tracking_uri, name, holder, seconds

    def still_held(self) -> bool:
        from semisep.evaluation.registry import is_absent, registry_error

        try:
            return self.client.get_registered_model(self.name).tags.get("holder") == self.holder
        except Exception as exc:  # noqa: BLE001
            if is_absent(exc):
                return False
            raise registry_error(self.tracking_uri, f"the promotion lease {self.name!r}", exc) from None

    def renew(self) -> None:
        self.client.set_registered_model_tag(self.name, "expires", f"{time.time() + self.seconds:.3f}")


def _exists(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS"


@contextmanager
def registry_lease(client, tracking_uri: str, model: str, seconds: float, poll_s: float = 1.0, say=None):
    """Hold ``<model>.lease`` for the block: wait while a live holder has it, break it when expired.

    Raises SemisepError when the registry cannot be reached (nothing was changed then)."""
    from semisep.evaluation.registry import is_absent, registry_error

    name = model + SUFFIX
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    told = False
    while True:
        try:
            client.create_registered_model(
                name, tags={"holder": holder, "expires": f"{time.time() + seconds:.3f}"},
                description=f"semisep's promotion lease for {model!r}: held while a promotion or rollback "
                            "reads and moves its aliases; deleted when it is done")
            break
        except Exception as exc:  # noqa: BLE001
            if not _exists(exc):
                raise registry_error(tracking_uri, f"the promotion lease {name!r}", exc) from None
        try:
            held = client.get_registered_model(name).tags
        except Exception as exc:  # noqa: BLE001
            if is_absent(exc):
                continue  # released meanwhile: try again at once
            raise registry_error(tracking_uri, f"the promotion lease {name!r}", exc) from None
        if time.time() > float(held.get("expires", 0)):
            # its holder died: break it, unless it changed hands since it was read
            if client.get_registered_model(name).tags.get("holder") == held.get("holder"):
                client.delete_registered_model(name)
                (say or print)(f"broke the expired promotion lease of {held.get('holder')}")
            continue
        if not told and say:
            say(f"waiting for the promotion lease {name!r}, held by {held.get('holder')}")
            told = True
        time.sleep(poll_s)
    lease = Lease(client, tracking_uri, name, holder, seconds)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(seconds / 3):
            try:
                lease.renew()
            except Exception:  # noqa: BLE001 - the check after the move says if the lease was lost
                pass

    renewer = threading.Thread(target=keep_renewing, daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join()
        try:
            if lease.still_held():
                client.delete_registered_model(name)
        except Exception:  # noqa: BLE001 - an unreleased lease expires by itself
            pass


def lease_lost(lease: Lease, what: str) -> SemisepError:
    return SemisepError(f"the promotion lease {lease.name!r} was taken over by another promotion during {what} "
                        f"(held for {lease.seconds:g} s, promote.lease_seconds): check the aliases of the registered "
                        "model in the MLflow UI before promoting again")
