"""The training tests' Ray cluster: one private `ray start --head` node per test session (train.testing).

Drivers run as subprocesses against it (``python -m train --address ...``), so these tests neither
depend on nor disturb a Ray instance another suite keeps in the test process.
"""
import pytest


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    from train.testing import session_head

    head, owner = session_head(tmp_path_factory.mktemp("ray") / "head.log")
    yield head
    if owner:
        head.stop()
