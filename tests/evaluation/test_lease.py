"""The promotion lease in the registry: one holder at a time, an expired holder's lease broken."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow import MlflowClient

from semisep.evaluation.lease import registry_lease


@pytest.fixture()
def client(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return uri, MlflowClient(uri)


def test_a_second_holder_waits_until_the_first_releases(client):
    uri, c = client
    order = []
    with registry_lease(c, uri, "m", 60, poll_s=0.05) as first:
        assert first.still_held()

        def second():
            with registry_lease(c, uri, "m", 60, poll_s=0.05, say=order.append) as lease:
                order.append(("held", lease.holder))

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        assert len(order) == 1 and "waiting for the promotion lease 'm.lease'" in order[0]  # still waiting
        order.append("first released")
    thread.join(30)
    assert order[1] == "first released" and order[2][0] == "held"
    with pytest.raises(Exception, match="RESOURCE_DOES_NOT_EXIST|not found"):
        c.get_registered_model("m.lease")  # released


def test_an_expired_lease_of_a_dead_holder_is_broken(client):
    uri, c = client
    c.create_registered_model("m.lease", tags={"holder": "gone:1:dead", "expires": f"{time.time() - 1:.3f}"})
    said = []
    with registry_lease(c, uri, "m", 60, poll_s=0.05, say=said.append) as lease:
        assert lease.still_held() and lease.holder != "gone:1:dead"
    assert said == ["broke the expired promotion lease of gone:1:dead"]


def test_a_lease_taken_over_is_no_longer_held(client):
    uri, c = client
    with registry_lease(c, uri, "m", 60, poll_s=0.05) as lease:
        c.set_registered_model_tag("m.lease", "holder", "someone-else")
        assert not lease.still_held()
    assert c.get_registered_model("m.lease").tags["holder"] == "someone-else"  # not ours to release
