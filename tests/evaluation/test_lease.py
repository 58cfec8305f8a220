"""The promotion lease in the registry: one holder at a time, generations taken over atomically,
expiry judged on the server's timestamps, proof before every alias move."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow import MlflowClient

from semisep.evaluation.lease import generations, registry_lease
from semisep.pipeline.errors import SemisepError


@pytest.fixture()
def client(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, MlflowClient(uri)


def test_a_second_holder_waits_until_the_first_releases(client):
    uri, c = client
    order = []
    with registry_lease(c, uri, "m", 60, poll_s=0.05) as first:
        assert first.still_held() and first.name == "m.lease.1"

        def second():
            with registry_lease(c, uri, "m", 60, poll_s=0.05, say=order.append) as lease:
                order.append(("held", lease.name))

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert len(order) == 1 and "waiting for the promotion lease 'm.lease.1'" in order[0]  # still waiting
        order.append("first released")
    thread.join(30)
    assert order[1] == "first released" and order[2] == ("held", "m.lease.1")  # released: generation 1 again
    assert generations(c, "m") == {}


def test_a_renewing_holder_keeps_the_lease_and_a_silent_one_is_taken_over_once(client):
    uri, c = client
    said, held, managers = [], [], []  # the managers kept: one collected would release its lease

    def hold(seconds, model="m", renew=True):
        manager = registry_lease(c, uri, model, seconds, poll_s=0.02, say=said.append, renew=renew)
        managers.append(manager)
        held.append(manager.__enter__().name)

    with registry_lease(c, uri, "m", 0.6, poll_s=0.02) as live:
        waiter = threading.Thread(target=hold, args=(0.6,), daemon=True)
        waiter.start()
        time.sleep(2.0)  # over three lease lengths: the renewals keep moving the server's timestamp
        assert not held and live.still_held()
    waiter.join(10)
    assert held == ["m.lease.1"]

    # a holder that died (no renewals): the next waiters take it over, and only one of them
    c.create_registered_model("m2.lease.4", tags={"holder": "gone:1:dead"})
    # (here nobody renews: each holder in turn goes silent and is taken over by exactly one waiter)
    held.clear()
    threads = [threading.Thread(target=hold, args=(0.5, "m2", False), daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert held == ["m2.lease.5", "m2.lease.6", "m2.lease.7"]  # one taker per generation
    assert said.count("took over the promotion lease of gone:1:dead (no renewal for 0.5 s)") == 1
    assert sorted(generations(c, "m2")) == [7]  # each taker deleted the generations below its own
    for manager in managers:
        manager.__exit__(None, None, None)
    assert generations(c, "m2") == {}


def test_four_concurrent_promotions_with_a_lease_expiring_before_the_move(client):
    """The first holder stalls (no renewals, like a paused process) past its lease; a waiter takes
    over; the stalled one's proof before its alias move fails and it moves nothing. Every move
    happens under a proven lease, so the champions form one chain."""
    uri, c = client
    c.create_registered_model("model")
    for _ in range(5):
        c.create_model_version("model", "file:///nowhere")
    c.set_registered_model_alias("model", "champion", "1")
    moves, gave_up, holding = [], [], threading.Event()

    def promote(version: str, stall: bool):
        with registry_lease(c, uri, "model", 1.0, poll_s=0.02, margin=0.3, renew=not stall) as lease:
            read = str(c.get_model_version_by_alias("model", "champion").version)
            if stall:
                holding.set()
                while max(generations(c, "model")) == lease.generation:  # until a waiter took over
                    time.sleep(0.02)
            else:
                time.sleep(0.05)  # the evaluation
            try:
                lease.prove(f"the move of 'champion' to version {version}")
            except SemisepError as exc:
                gave_up.append((version, str(exc)))
                return
            c.set_registered_model_alias("model", "previous", read)
            c.set_registered_model_alias("model", "champion", version)
            moves.append((read, version))

    stalled = threading.Thread(target=promote, args=("2", True))
    stalled.start()
    assert holding.wait(30)
    others = [threading.Thread(target=promote, args=(v, False)) for v in ("3", "4", "5")]
    for t in others:
        t.start()
    for t in [stalled, *others]:
        t.join(60)
    assert [v for v, _ in gave_up] == ["2"] and "was taken over by another promotion" in gave_up[0][1]
    assert len(moves) == 3 and moves[0][0] == "1"
    assert all(moves[k][0] == moves[k - 1][1] for k in range(1, 3)), moves  # each read the last one's champion
    assert str(c.get_model_version_by_alias("model", "champion").version) == moves[-1][1]
    assert str(c.get_model_version_by_alias("model", "previous").version) == moves[-1][0]
    assert generations(c, "model") == {}  # the last holder released it
