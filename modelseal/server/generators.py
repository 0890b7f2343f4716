"""Generators: the plug-in point that produces one user's IML, in memory.

A generator is any callable ``(GenerationRequest) -> bytes | bytearray``, named in
the settings by import path (``"package.module:callable"``). The server seals its
result at once and keeps only the ciphertext; a returned ``bytearray`` is wiped
after sealing (``bytes`` cannot be wiped, so returning a bytearray is preferred).

A generator that personalises from the user's own data reads it through
``request.user_data`` (a :class:`UserData`; None when the server has no store of
user data), for instance the examples the user's device uploaded.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from modelseal.server.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DEFAULT_TEST_SIZE_BYTES",
    "GenerationRequest",
    "Generator",
    "UserData",
    "canary_generator",
    "deterministic_test_generator",
    "load_generator",
    "with_user_data",
]

DEFAULT_TEST_SIZE_BYTES = 4096
MAX_TEST_SIZE_BYTES = 256 << 20
_TEST_LABEL = b"modelseal/1 test-generator"


class UserData(Protocol):
    """One user's data held by the server, read only when a generator asks for it."""

    def examples(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None:
        """The user's uploaded examples ``(x [n, 64], y [n])``, or None when there are none."""
        ...


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What a generator gets to know about the issuance.

    Attributes:
        user_id: The user's pseudonymous subject id (the ``sub`` claim).
        model_id: The model id (the ``mid`` claim).
        device_id: The device the package is for (the ``aud`` claim).
        jti: The issuance id, for per-issuance watermarks.
        options: The model's ``options`` from the settings.
        user_data: The user's stored data (uploaded examples), or None.
    """

    user_id: str
    model_id: str
    device_id: str
    jti: str
    options: Mapping[str, str | int | bool] = field(default_factory=lambda: MappingProxyType({}))
    user_data: UserData | None = None


@runtime_checkable
class Generator(Protocol):
    """Produces a user's IML plaintext in memory."""

    def __call__(self, request: GenerationRequest, /) -> bytes | bytearray:
        """Return the plaintext model for ``request``."""
        ...


def _size_option(request: GenerationRequest) -> int:
    size = request.options.get("size_bytes", DEFAULT_TEST_SIZE_BYTES)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TEST_SIZE_BYTES:
        raise ValueError(f"options.size_bytes must be 0..{MAX_TEST_SIZE_BYTES}, got {size!r}")
    return size


def deterministic_test_generator(request: GenerationRequest) -> bytearray:
    """Bytes derived from (user id, model id) only; ``options.size_bytes`` sets the length.

    Two requests for the same user and model give the same bytes, so tests can
    check the opened plaintext without the server keeping a copy.
    """
    seed = _TEST_LABEL + b"\x00" + request.user_id.encode() + b"\x00" + request.model_id.encode()
    return bytearray(hashlib.shake_256(seed).digest(_size_option(request)))


def canary_generator(request: GenerationRequest) -> bytearray:
    """Test hook: the deterministic bytes with ``options.canary_hex`` embedded in them.

    Tests scan disks and logs for the canary to show plaintext never leaves memory.
    """
    canary_hex = request.options.get("canary_hex")
    if not isinstance(canary_hex, str):
        raise ValueError("canary_generator needs options.canary_hex")
    canary = bytes.fromhex(canary_hex)
    body = deterministic_test_generator(request)
    middle = len(body) // 2
    return body[:middle] + canary + body[middle:]


def with_user_data(generator: Generator, user_data: Callable[[str], UserData]) -> Generator:
    """Wrap ``generator`` so that each request carries ``user_data(request.user_id)``."""

    def generate(request: GenerationRequest, /) -> bytes | bytearray:
        if request.user_data is None:
            request = replace(request, user_data=user_data(request.user_id))
        return generator(request)

    return generate


def load_generator(import_path: str) -> Generator:
    """Import ``"package.module:callable"`` and check that it is callable.

    Raises:
        ConfigurationError: The module or attribute cannot be loaded, or is not callable.
    """
    module_name, _, attribute = import_path.partition(":")
    try:
        module = importlib.import_module(module_name)
        target = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load generator {import_path!r}: {exc}") from None
    if not callable(target):
        raise ConfigurationError(f"generator {import_path!r} is not callable")
    generator: Generator = target
    return generator
