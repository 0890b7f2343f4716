"""Accounts that share a client network with a blocked account are linked to it."""

from __future__ import annotations

from typing import Any

import pytest

from modelseal.fraud import Verdict
from modelseal.server.errors import AccountBlockedError
from tests.server.conftest import Harness


def linked(h: Harness, name: str) -> list[dict[str, Any]]:
    user = h.services.accounts.find_user(name)
    return [
        dict(e.details)
        for e in h.services.events.recent(type_="linked_account_blocked", limit=100)
        if e.user_id == user.id
    ]


def admit(h: Harness, name: str, ip: str) -> Verdict:
    principal = h.services.authenticator.authenticate(h.tokens[name])
    return h.services.abuse.admit(principal, device_id=None, ip=ip, api_version=None)


def test_a_new_account_on_a_blocked_accounts_network_is_linked(server: Harness) -> None:
    for name in ("farm1", "farm2", "farm3", "bystander", "early"):
        server.user(name)
    admit(server, "early", "203.0.113.200")  # seen before the block
    admit(server, "farm1", "203.0.113.10")
    farm1 = server.services.authenticator.authenticate(server.tokens["farm1"])
    server.services.abuse.honey_model_requested(farm1, "m-decoy", None)
    farm1_id = farm1.user_id
    # Already on the network when farm1 was blocked: linked at once.
    assert linked(server, "early") == [
        {"linked_user": farm1_id, "network": "203.0.113.0/24", "new_account": False}
    ]
    # First seen afterwards, from another address of the same /24: linked on arrival, as
    # a new account (its first request ever).
    admit(server, "farm2", "203.0.113.11")
    assert [(d["linked_user"], d["new_account"]) for d in linked(server, "farm2")] == [
        (farm1_id, True)
    ]
    # Elsewhere: nothing.
    admit(server, "bystander", "198.51.100.7")
    assert linked(server, "bystander") == []
    # Seen again within the interval: no second event.
    admit(server, "farm2", "203.0.113.12")
    assert len(linked(server, "farm2")) == 1


def test_crowded_networks_link_nobody(server: Harness) -> None:
    limit = server.settings.abuse.address_link_max_accounts
    names = [f"nat{i}" for i in range(limit + 1)]
    for name in names:
        server.user(name)
        admit(server, name, "100.64.0.1")
    first = server.services.authenticator.authenticate(server.tokens[names[0]])
    server.services.abuse.honey_model_requested(first, "m-decoy", None)
    server.user("late")
    admit(server, "late", "100.64.0.9")
    assert all(linked(server, name) == [] for name in [*names[1:], "late"])


def test_linkage_limits_neighbours_and_blocks_only_fresh_accounts_of_a_farm(
    server: Harness,
) -> None:
    for name in ("neighbour", "farm1", "farm2", "farm3", "traveller"):
        server.user(name)
    admit(server, "neighbour", "203.0.113.200")  # an honest account behind the same NAT
    admit(server, "traveller", "198.51.100.7")  # established elsewhere
    for name, ip in (("farm1", "203.0.113.10"), ("farm2", "203.0.113.11")):
        assert admit(server, name, ip) is not Verdict.MALICIOUS
        farm = server.services.authenticator.authenticate(server.tokens[name])
        server.services.abuse.honey_model_requested(farm, "m-decoy", None)
    # Two blocked accounts on its network: the neighbour is limited, never blocked.
    assert admit(server, "neighbour", "203.0.113.200") is Verdict.SUSPICIOUS
    # An established account arriving on the network: limited too.
    assert admit(server, "traveller", "203.0.113.50") is Verdict.SUSPICIOUS
    # A brand-new account whose first request comes from there: the farm pattern, blocked.
    with pytest.raises(AccountBlockedError):
        admit(server, "farm3", "203.0.113.12")
