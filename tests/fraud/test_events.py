"""The app-reported event schema and the translation of stored events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelseal.client.outbox import MAX_EVENTS, Event
from modelseal.client.outbox import EventType as ClientEventType
from modelseal.fraud.events import (
    MAX_DETAIL_KEYS,
    MAX_DETAIL_STRING_CHARS,
    MAX_EVENTS_PER_BATCH,
    AppEventBatchIn,
    AppEventIn,
    AppEventType,
    ServerEventType,
    canonical_type,
    fraud_event,
)
from modelseal.server.services import devices
from modelseal.server.services.events import EventType as StoredEventType


def test_the_device_id_syntax_is_the_servers() -> None:
    from modelseal.fraud import events

    assert events.DEVICE_ID_PATTERN.pattern == devices.DEVICE_ID_PATTERN.pattern


def test_what_the_shipped_client_sends_is_accepted() -> None:
    # modelseal.client.sdk posts {"device_id", "events": [Event.to_json(), ...]}.
    queued = [
        Event(
            ClientEventType.TLS_PIN_MISMATCH,
            1_800_000_000,
            {"host": "api.example", "observed_pin": "sha256/x"},
        ),
        Event(
            ClientEventType.DOWNLOAD_FAILURE,
            1_800_000_001,
            {"model_id": "m", "jti": "j", "reason": "chunk_tag_failed"},
        ),
    ]
    batch = AppEventBatchIn.model_validate(
        {"device_id": "dev-1", "events": [e.to_json() for e in queued]}
    )
    assert [e.type for e in batch.events] == [
        AppEventType.TLS_PIN_MISMATCH,
        AppEventType.DOWNLOAD_FAILED,
    ]
    assert batch.events[1].record_details() == {
        "model_id": "m",
        "jti": "j",
        "reason": "chunk_tag_failed",
        "client_at": 1_800_000_001,
    }
    assert MAX_EVENTS_PER_BATCH >= MAX_EVENTS  # a full outbox fits in one post


def test_the_client_time_is_optional_and_kept_apart() -> None:
    event = AppEventIn.model_validate({"type": "root_detected", "details": {"client_at": 5}})
    assert event.at is None
    assert event.record_details() == {}  # a reported client_at is not taken as ours
    assert AppEventIn.model_validate({"type": "root_detected"}).details == {}


def _bad_events() -> list[tuple[str, Any]]:
    return [
        ("unknown type", {"type": "root_detectd"}),
        ("server type", {"type": "honey_token_used"}),
        ("type not a string", {"type": 3}),
        ("extra member", {"type": "root_detected", "user_id": 7}),
        ("at as a string", {"type": "root_detected", "at": "1800000000"}),
        ("at as a float", {"type": "root_detected", "at": 1.5}),
        ("at negative", {"type": "root_detected", "at": -1}),
        ("at absurd", {"type": "root_detected", "at": 2**41}),
        ("details not an object", {"type": "root_detected", "details": []}),
        (
            "too many details",
            {"type": "root_detected", "details": {f"k{i}": i for i in range(MAX_DETAIL_KEYS + 1)}},
        ),
        (
            "long string",
            {"type": "root_detected", "details": {"k": "x" * (MAX_DETAIL_STRING_CHARS + 1)}},
        ),
        ("nested object", {"type": "root_detected", "details": {"k": {"a": 1}}}),
        ("array", {"type": "root_detected", "details": {"k": [1]}}),
        ("float", {"type": "root_detected", "details": {"k": 1.5}}),
        ("huge int", {"type": "root_detected", "details": {"k": 2**60}}),
        ("bad key", {"type": "root_detected", "details": {"Key": 1}}),
        ("long key", {"type": "root_detected", "details": {"k" * 33: 1}}),
        ("empty key", {"type": "root_detected", "details": {"": 1}}),
    ]


@pytest.mark.parametrize("body", [b for _, b in _bad_events()], ids=[n for n, _ in _bad_events()])
def test_malformed_app_events_are_refused(body: Any) -> None:
    with pytest.raises(ValidationError):
        AppEventIn.model_validate(body)


def test_the_largest_accepted_event() -> None:
    details = {f"k{i}": "x" * MAX_DETAIL_STRING_CHARS for i in range(MAX_DETAIL_KEYS)}
    event = AppEventIn.model_validate({"type": "root_detected", "at": 2**40, "details": details})
    assert len(event.details) == MAX_DETAIL_KEYS


@pytest.mark.parametrize(
    "body",
    [
        {"device_id": "dev-1", "events": []},
        {"device_id": "dev-1", "events": [{"type": "root_detected"}] * (MAX_EVENTS_PER_BATCH + 1)},
        {"device_id": "", "events": [{"type": "root_detected"}]},
        {"device_id": "dev 1", "events": [{"type": "root_detected"}]},
        {"device_id": "d" * 129, "events": [{"type": "root_detected"}]},
        {"events": [{"type": "root_detected"}]},
        {"device_id": "dev-1", "events": [{"type": "root_detected"}], "user_id": 3},
        {"device_id": "dev-1", "events": [{"type": "root_detected"}, {"type": "nope"}]},
    ],
    ids=[
        "empty",
        "too many",
        "empty device",
        "space in device",
        "long device",
        "no device",
        "extra",
        "one bad",
    ],
)
def test_malformed_batches_are_refused_whole(body: Any) -> None:
    with pytest.raises(ValidationError):
        AppEventBatchIn.model_validate(body)


def test_a_full_batch_is_accepted() -> None:
    batch = AppEventBatchIn.model_validate(
        {"device_id": "dev-1", "events": [{"type": "app_reinstalled"}] * MAX_EVENTS_PER_BATCH}
    )
    assert len(batch.events) == MAX_EVENTS_PER_BATCH


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("link_invalid", "link_tampered"),
        ("link_expired", "link_expired"),
        ("object_gone", "link_expired"),
        ("link_used", "link_reused"),
        ("link_wrong_device", "link_wrong_device"),
        ("device_revoked", "revoked_device_used"),
        ("range_not_satisfiable", "access_error"),
        (None, "access_error"),
        (3, "access_error"),
    ],
)
def test_stored_access_errors_translate_by_reason(reason: object, expected: str) -> None:
    assert canonical_type("access_error", {"reason": reason, "what": "download"}) == expected


def test_stored_server_event_types_map_onto_the_vocabulary() -> None:
    # Every type the server already records either is a fraud type or is translated.
    vocabulary = {t.value for t in ServerEventType} | {"access_error", "issuer_key_rotated"}
    for stored in StoredEventType:
        assert stored.value in vocabulary, (
            f"the server records {stored.value!r}, which modelseal.fraud.events.ServerEventType "
            "does not know: add it there (and a rule, if it is a fraud signal)"
        )
    assert canonical_type("download_failure", {}) == "download_failed"
    assert canonical_type("root_detected", {}) == "root_detected"


def test_fraud_event_from_a_row() -> None:
    event = fraud_event(
        id=9,
        type_="access_error",
        at=5,
        source="server",
        user_id=1,
        device_id=None,
        details={"reason": "link_used"},
    )
    assert (event.id, event.type, event.at, event.details) == (
        9,
        "link_reused",
        5,
        {"reason": "link_used"},
    )
    odd: object
    for odd in (None, [], "x", 3):
        row = fraud_event(
            id=1,
            type_="x",
            at=1,
            source="app",
            user_id=None,
            device_id=None,
            details=odd,  # type: ignore[arg-type]
        )
        assert row.details == {}


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=300)
    | st.sampled_from(["root_detected", "download_failure", "honey_token_used", "dev-1"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "at", "details", "device_id", "events", "k", "Key", ""])
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(body=_JSON)
def test_any_json_body_is_either_a_valid_batch_or_a_validation_error(body: object) -> None:
    try:
        batch = AppEventBatchIn.model_validate(body)
    except ValidationError:
        return
    assert 1 <= len(batch.events) <= MAX_EVENTS_PER_BATCH
    for event in batch.events:
        assert event.type in set(AppEventType)
        assert len(event.details) <= MAX_DETAIL_KEYS
