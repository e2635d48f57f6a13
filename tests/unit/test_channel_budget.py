"""The channel-creation budget: one connection, or one address, cannot use up max_channels.

Pure: time is a number passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broadcaster.config import Config, LimitsConfig
from broadcaster.errors import ConfigError
from broadcaster.security.channel_budget import ChannelBudgets, Overspent


def budgets(
    *,
    new_channel_rate: float = 10.0,
    new_channel_burst: float = 200.0,
    new_channel_rate_per_ip: float = 50.0,
    new_channel_burst_per_ip: float = 1000.0,
) -> ChannelBudgets:
    """The budgets of a server exempting loopback, as by default."""
    return ChannelBudgets(
        LimitsConfig(
            exempt_networks=("127.0.0.0/8",),
            new_channel_rate=new_channel_rate,
            new_channel_burst=new_channel_burst,
            new_channel_rate_per_ip=new_channel_rate_per_ip,
            new_channel_burst_per_ip=new_channel_burst_per_ip,
        )
    )


def spend_until_refused(spend: Callable[[float], Overspent | None], now: float, most: int) -> int:
    """How many creations pass at `now` before the first refusal (at most `most`)."""
    for count in range(most):
        if spend(now) is not None:
            return count
    return most


def test_a_connection_gets_its_burst_then_its_rate() -> None:
    """The abuser is refused with a reason and a wait; time gives it tokens back."""
    budget = budgets(new_channel_rate=10.0, new_channel_burst=20.0).for_connection("10.0.0.1", 0.0)
    assert spend_until_refused(budget.spend, 0.0, 100) == 20
    refusal = budget.spend(0.0)
    assert refusal is not None
    assert refusal.reason == "new_channel_rate"
    assert refusal.retry_after == pytest.approx(0.1)
    assert "[limits] new_channel_rate" in refusal.message
    assert budget.spend(0.1) is None
    assert budget.spend(0.1) is not None


def test_another_connection_has_its_own_budget() -> None:
    """One connection over its budget does not refuse a neighbour (the crowd)."""
    shared = budgets(new_channel_rate=1.0, new_channel_burst=5.0, new_channel_rate_per_ip=0.0)
    abuser = shared.for_connection("10.0.0.1", 0.0)
    spend_until_refused(abuser.spend, 0.0, 100)
    other = shared.for_connection("10.0.0.1", 0.0)
    assert other.spend(0.0) is None


def test_connections_of_one_address_share_its_budget() -> None:
    """Opening more connections does not multiply what one address may create."""
    shared = budgets(
        new_channel_rate=0.0, new_channel_rate_per_ip=1.0, new_channel_burst_per_ip=30.0
    )
    created = 0
    for _ in range(10):
        created += spend_until_refused(shared.for_connection("10.0.0.1", 0.0).spend, 0.0, 100)
    assert created == 30
    refusal = shared.for_connection("10.0.0.1", 0.0).spend(0.0)
    assert refusal is not None
    assert refusal.reason == "new_channel_rate_per_ip"
    assert shared.for_connection("10.0.0.2", 0.0).spend(0.0) is None


def test_ipv6_addresses_share_their_64() -> None:
    """One host usually owns a whole /64: per-/128 budgets would be no budget at all."""
    shared = budgets(
        new_channel_rate=0.0, new_channel_rate_per_ip=1.0, new_channel_burst_per_ip=2.0
    )
    assert shared.for_connection("2001:db8::1", 0.0).spend(0.0) is None
    assert shared.for_connection("2001:db8::2", 0.0).spend(0.0) is None
    assert shared.for_connection("2001:db8::3", 0.0).spend(0.0) is not None


def test_exempt_networks_skip_the_address_budget_not_the_connections() -> None:
    """A reverse proxy on this host carries everyone: only per-connection budgets apply."""
    shared = budgets(
        new_channel_rate=1.0,
        new_channel_burst=3.0,
        new_channel_rate_per_ip=1.0,
        new_channel_burst_per_ip=1.0,
    )
    for _ in range(5):
        assert spend_until_refused(shared.for_connection("127.0.0.1", 0.0).spend, 0.0, 100) == 3


def test_rate_0_turns_a_budget_off() -> None:
    shared = budgets(new_channel_rate=0.0, new_channel_rate_per_ip=0.0)
    assert spend_until_refused(shared.for_connection("10.0.0.1", 0.0).spend, 0.0, 10_000) == 10_000


def test_defaults_let_a_new_connection_subscribe_to_max_subscriptions_new_channels() -> None:
    """The default burst covers max_subscriptions: legitimate clients never see the budget."""
    limits = Config.embedded_default().limits
    assert limits.new_channel_burst >= limits.max_subscriptions
    assert limits.new_channel_burst_per_ip >= limits.max_subscriptions


@pytest.mark.parametrize(
    ("limits", "key", "expected"),
    [
        ({"new_channel_rate": -1}, "[limits] new_channel_rate", ">= 0"),
        ({"new_channel_burst": 0.5}, "[limits] new_channel_burst", ">= 1"),
        ({"new_channel_rate_per_ip": -2}, "[limits] new_channel_rate_per_ip", ">= 0"),
        ({"new_channel_burst_per_ip": 0}, "[limits] new_channel_burst_per_ip", ">= 1"),
    ],
)
def test_config_mistakes_name_the_key(limits: dict[str, object], key: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as caught:
        Config.build(limits=limits)
    assert key in str(caught.value)


def test_a_rate_without_a_burst_gets_twice_the_rate() -> None:
    limits = Config.build(limits={"new_channel_rate": 4, "new_channel_rate_per_ip": 0.2}).limits
    assert (limits.new_channel_rate, limits.new_channel_burst) == (4.0, 8.0)
    assert (limits.new_channel_rate_per_ip, limits.new_channel_burst_per_ip) == (0.2, 1.0)
