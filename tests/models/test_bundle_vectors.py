"""The MSBUNDLE/1 vectors in tests/models/vectors/: parser and reader must agree with each."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from modelseal.models.bundle import BundleReader, parse_bundle
from modelseal.models.errors import BundleError

VECTORS = Path(__file__).resolve().parent / "vectors"
TESTDATA = VECTORS / "testdata"


def _load(path: Path) -> tuple[dict[str, str], bytes]:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    header = dict(line.split(": ", 1) for line in head.decode("ascii").splitlines())
    return header, body


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bundle_vector_generator", VECTORS / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAMES = sorted(p.name for p in TESTDATA.iterdir())


def test_there_are_valid_and_invalid_vectors() -> None:
    expectations = {_load(TESTDATA / name)[0]["expect"] for name in NAMES}
    assert expectations == {"success", "bundle_invalid"}
    assert len(NAMES) >= 30


def test_the_files_match_their_generator() -> None:
    generator = _generator()
    expected = {
        name: generator.encode_vector(header, data)
        for name, (header, data) in generator.vectors().items()
    }
    assert sorted(expected) == NAMES
    for name in NAMES:
        assert (TESTDATA / name).read_bytes() == expected[name], name


@pytest.mark.parametrize("name", NAMES)
def test_vector(name: str) -> None:
    header, data = _load(TESTDATA / name)
    if header["expect"] == "success":
        listing = [item.split(":") for item in header["files"].split(",")]
        bundle = parse_bundle(data)
        assert [(n, hashlib.sha256(c).hexdigest()) for n, c in bundle.files.items()] == [
            (n, digest) for n, digest in listing
        ]
        reader = BundleReader(lambda start, stop: data[start:stop], len(data))
        for file_name, digest in listing:
            assert hashlib.sha256(reader.read_file(file_name)).hexdigest() == digest
        return
    assert header["expect"] == "bundle_invalid"
    with pytest.raises(BundleError) as info:
        parse_bundle(data)
    assert info.value.code == "bundle_invalid"
    # The reader checks lazily, but reading every file must fail somewhere too.
    with pytest.raises(BundleError) as lazy:
        _read_everything(data)
    assert lazy.value.code == "bundle_invalid"


def _read_everything(data: bytes) -> None:
    reader = BundleReader(lambda start, stop: data[start:stop], len(data))
    for entry in reader.manifest.files:
        reader.read_file(entry.name)
