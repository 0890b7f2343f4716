"""The KeyDescription parser: real records, version tolerance, and strictness."""

from __future__ import annotations

import base64
import json

import pytest
from pyasn1.codec.der import encoder
from pyasn1.type import univ

from modelseal.attestation import AttestationMalformedError
from modelseal.attestation.android_asn1 import (
    KeyPurpose,
    SecurityLevel,
    VerifiedBootState,
    parse_application_id,
    parse_key_description,
)
from modelseal.attestation.android_chain import _parse_leaf
from tests.attestation.android_fixtures import (
    GOOGLE_CHAINS,
    KEYATTESTATION_VECTORS,
    KeyDescriptionSpec,
    application_id,
    der_sequence,
    explicit,
    google_chain,
    keyattestation_chain,
    root_of_trust,
)


def _record(chain_name: str) -> bytes:
    chain = keyattestation_chain(chain_name)
    return _parse_leaf(chain.certificates[0]).key_description


@pytest.mark.parametrize("name", ["TEE_EC_2026_ROOT", "SB_EC_2026_ROOT"])
def test_real_2026_records_match_the_published_expectations(name: str) -> None:
    text = (KEYATTESTATION_VECTORS / f"tegu_sdk36_{name}.json").read_text()
    expected = json.loads("\n".join(line for line in text.splitlines() if "//" not in line))
    record = parse_key_description(_record(name))
    hw = record.hardware_enforced
    assert record.attestation_version == int(expected["attestationVersion"])
    assert record.keymint_version == int(expected["keyMintVersion"])
    level = {"TRUSTED_ENVIRONMENT": 1, "STRONG_BOX": 2}[expected["attestationSecurityLevel"]]
    assert record.attestation_security_level == level
    assert record.attestation_challenge == base64.b64decode(expected["attestationChallenge"])
    exp_hw = expected["hardwareEnforced"]
    assert hw.purposes == frozenset(int(p) for p in exp_hw["purposes"])
    assert hw.algorithm == int(exp_hw["algorithms"])
    assert hw.key_size == int(exp_hw["keySize"])
    assert hw.ec_curve == int(exp_hw["ecCurve"])
    assert hw.no_auth_required is True
    assert hw.origin == 0
    assert hw.os_version == int(exp_hw["osVersion"])
    assert hw.os_patch_level == int(exp_hw["osPatchLevel"])
    assert hw.vendor_patch_level == int(exp_hw["vendorPatchLevel"])
    assert hw.boot_patch_level == int(exp_hw["bootPatchLevel"])
    rot = exp_hw["rootOfTrust"]
    assert hw.root_of_trust is not None
    assert hw.root_of_trust.verified_boot_key == base64.b64decode(rot["verifiedBootKey"])
    assert hw.root_of_trust.verified_boot_hash == base64.b64decode(rot["verifiedBootHash"])
    assert hw.root_of_trust.device_locked is True
    assert hw.root_of_trust.verified_boot_state == VerifiedBootState.VERIFIED
    app = record.software_enforced.application_id
    exp_app = expected["softwareEnforced"]["attestationApplicationId"]
    assert app is not None
    assert [(p.name, p.version) for p in app.packages] == [
        (p["name"], int(p["version"])) for p in exp_app["packages"]
    ]
    assert list(app.signature_digests) == [base64.b64decode(s) for s in exp_app["signatures"]]
    assert record.software_enforced.creation_datetime_ms == int(
        expected["softwareEnforced"]["creationDateTime"]
    )
    assert hw.tags_ordered
    assert record.software_enforced.tags_ordered


@pytest.mark.parametrize(("algorithm", "level"), GOOGLE_CHAINS)
def test_real_2019_records_parse(algorithm: str, level: str) -> None:
    chain = google_chain(algorithm, level)
    record = parse_key_description(_parse_leaf(chain.certificates[0]).key_description)
    assert record.attestation_version == 3
    assert record.keymint_version == 4
    assert SecurityLevel(record.attestation_security_level).label == chain.level
    assert record.attestation_challenge == b"abc"
    assert record.hardware_enforced.purposes == {KeyPurpose.SIGN, KeyPurpose.VERIFY}
    assert record.hardware_enforced.os_patch_level == 201907
    app = record.software_enforced.application_id
    assert app is not None
    assert len(app.packages) == 13


def _description(sw: list[bytes], hw: list[bytes], **top: int) -> bytes:
    return der_sequence(
        encoder.encode(univ.Integer(top.get("version", 4))),
        encoder.encode(univ.Enumerated(1)),
        encoder.encode(univ.Integer(4)),
        encoder.encode(univ.Enumerated(1)),
        encoder.encode(univ.OctetString(b"c")),
        encoder.encode(univ.OctetString(b"")),
        der_sequence(*sw),
        der_sequence(*hw),
    )


def test_unknown_tags_are_skipped_and_reported() -> None:
    record = parse_key_description(
        _description([], [explicit(2, univ.Integer(3)), explicit(4242, univ.Integer(1))])
    )
    assert record.hardware_enforced.algorithm == 3
    assert record.hardware_enforced.unknown_tags == (4242,)


def test_identical_repeated_tag_is_tolerated_but_a_different_one_is_refused() -> None:
    same = explicit(2, univ.Integer(3))
    record = parse_key_description(_description([], [same, same]))
    assert record.hardware_enforced.repeated_tags == (2,)
    with pytest.raises(AttestationMalformedError, match=r"\[2\] appears twice"):
        parse_key_description(_description([], [same, explicit(2, univ.Integer(1))]))


def test_tags_out_of_order_are_tolerated_and_reported() -> None:
    record = parse_key_description(
        _description([], [explicit(705, univ.Integer(1)), explicit(2, univ.Integer(3))])
    )
    assert record.hardware_enforced.tags_ordered is False
    assert record.hardware_enforced.os_version == 1


def test_version_1_root_of_trust_without_boot_hash_parses() -> None:
    rot = root_of_trust(locked=True, state=0, boot_hash=None)
    record = parse_key_description(_description([], [explicit(704, univ.Any(rot))], version=1))
    assert record.hardware_enforced.root_of_trust is not None
    assert record.hardware_enforced.root_of_trust.verified_boot_hash is None


def test_non_der_length_is_refused() -> None:
    good = KeyDescriptionSpec(challenge=b"x" * 32).encode()
    # Re-encode the outer length in long form, which DER forbids for short values.
    body = good[4:] if good[1] == 0x82 else good[2:]
    bad = b"\x30\x83" + len(body).to_bytes(3, "big") + body
    with pytest.raises(AttestationMalformedError):
        parse_key_description(bad)


def test_trailing_bytes_are_refused() -> None:
    good = KeyDescriptionSpec(challenge=b"x" * 32).encode()
    with pytest.raises(AttestationMalformedError, match="trailing"):
        parse_key_description(good + b"\x00")


def test_wrong_inner_type_names_the_field() -> None:
    with pytest.raises(AttestationMalformedError, match="rootOfTrust"):
        parse_key_description(_description([], [explicit(704, univ.Integer(5))]))


def test_implicit_or_universal_elements_are_refused() -> None:
    with pytest.raises(AttestationMalformedError, match="EXPLICIT"):
        parse_key_description(_description([], [encoder.encode(univ.Integer(5))]))


def test_non_minimal_high_tag_number_is_refused() -> None:
    element = b"\xbf\x80\x82\x03\x02\x01\x00"  # [2] written as a long-form tag
    with pytest.raises(AttestationMalformedError, match="minimal"):
        parse_key_description(_description([], [element]))


def test_application_id_inside_the_octet_string_must_parse() -> None:
    with pytest.raises(AttestationMalformedError, match="attestationApplicationId"):
        parse_key_description(_description([explicit(709, univ.OctetString(b"\x30\x01"))], []))
    app = application_id([("a.b", 1), ("c.d", 2)], [b"\x01" * 32])
    parsed = parse_application_id(app)
    assert [p.name for p in parsed.packages] == ["a.b", "c.d"]
    with pytest.raises(AttestationMalformedError, match="UTF-8"):
        parse_application_id(application_id([("zz", 1)], []).replace(b"zz", b"\xff\xfe"))


@pytest.mark.parametrize("data", [b"", b"\x30", b"\x30\x00", b"\x04\x00", b"\xff" * 70_000])
def test_degenerate_inputs_raise_only_malformed(data: bytes) -> None:
    with pytest.raises(AttestationMalformedError):
        parse_key_description(data)
