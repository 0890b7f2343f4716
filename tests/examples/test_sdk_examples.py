"""DeviceClient.upload_examples against a real server process: batching, then a personal IML."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelseal.client.errors import ServerRefusedError
from modelseal.client.examples import batches, check_examples
from modelseal.errors import UsageError
from modelseal.models import digits, reference
from tests.e2e.conftest import ServerProcess, enrolled, model_specs, run_server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A uvicorn server process with the reference model."""
    with run_server(tmp_path_factory.mktemp("examples-server"), model_specs()) as running:
        yield running


def test_uploads_are_split_to_fit_the_body_limit_and_personalise_the_fetched_model(
    live: ServerProcess, tmp_path: Path
) -> None:
    client = enrolled(live, tmp_path / "device")
    x, y = digits.user_examples("the-devices-owner", 200)
    uploads = client.upload_examples(x, y)
    assert len(uploads) > 1  # 200 examples do not fit in one 64 KiB request
    assert sum(u.count for u in uploads) == 200
    assert uploads[-1].total == 200
    client.fetch("digits")
    (stored,) = [m for m in client.models() if m.model_id == "digits"]
    assert stored.header.claims is not None
    subject = stored.header.claims.sub
    xs, ys = check_examples(x, y)
    expected = reference.build_iml_bundle(subject, "digits", (xs, ys))
    with client.open_plaintext("digits") as (_, plaintext):
        assert bytes(plaintext) == bytes(expected)
    model = client.load("digits")
    holdout_x, holdout_y = digits.user_holdout("the-devices-owner")
    logits = model.run(np.asarray(holdout_x, dtype=np.float32))["logits"]
    assert float(np.mean(logits.argmax(axis=1) == np.asarray(holdout_y))) > 0.5
    assert client.delete_examples() == len(uploads)


def test_examples_are_checked_before_anything_is_sent(live: ServerProcess, tmp_path: Path) -> None:
    client = enrolled(live, tmp_path / "device")
    with pytest.raises(UsageError, match="shape"):
        client.upload_examples(np.zeros((3, 63)), [1, 2, 3])
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        client.upload_examples(np.full((1, 64), 2.0), [1])
    with pytest.raises(UsageError, match=r"labels 0\.\.9"):
        client.upload_examples(np.zeros((1, 64)), [10])


def test_a_request_larger_than_the_server_accepts_is_refused_with_its_code(
    live: ServerProcess, tmp_path: Path
) -> None:
    client = enrolled(live, tmp_path / "device")
    x = np.random.default_rng(1).random((300, 64))
    with pytest.raises(ServerRefusedError) as refused:
        client.upload_examples(x, np.zeros(300, dtype=np.int64), max_request_bytes=1 << 20)
    assert refused.value.code == "body_too_large"


def test_batches_round_trip_every_float32_exactly() -> None:
    x = np.random.default_rng(2).random((50, 64)).astype(np.float32)
    y = np.arange(50) % 10
    rows = [row for body in batches(x, y, max_request_bytes=10_000) for row in body["x"]]
    np.testing.assert_array_equal(np.asarray(rows, dtype=np.float64).astype(np.float32), x)
