"""The pure security decisions with explicit times: origins, admission, overload, publish
rate, tokens, channel permissions, the admin gate, exposure warnings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

import jwt
import pytest

from broadcaster.config import AuthConfig, Config, LimitsConfig
from broadcaster.core.policy import Access, ChannelPolicy
from broadcaster.security.access import refuse_publish, refuse_subscribe, refuse_system_subscribe
from broadcaster.security.admin import AdminGate, is_loopback
from broadcaster.security.admission import Admission, HalfOpen, Refusal, Ticket, address_key
from broadcaster.security.auth import Authenticator, Grant, TokenRejected
from broadcaster.security.exposure import exposure_warnings
from broadcaster.security.origins import OriginPolicy, origin_entry_problem
from broadcaster.security.overload import Overload
from broadcaster.security.publish_limit import PublishLimiter, Verdict
from tests.support.security import ADMIN_TOKEN, SECRET, hs256, rsa_keys

# --- origins ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:8765", True),  # self: the Host header's host:port
        ("HTTP://127.0.0.1:8765/", True),  # case and a trailing slash do not matter
        ("http://127.0.0.1:9999", False),  # another port is another origin
        ("https://app.example.com", True),
        ("https://app.example.com:443", True),  # the default port is the same origin
        ("http://app.example.com", False),  # another scheme is another origin
        ("https://x.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),  # the pattern needs a subdomain
        ("https://evil-example.org", False),
        ("https://x.example.org.evil.net", False),
        ("null", False),
    ],
)
def test_origin_allowlist(origin: str, allowed: bool) -> None:
    policy = OriginPolicy(("self", "https://app.example.com", "https://*.example.org"))
    assert policy.allows([origin], "127.0.0.1:8765") is allowed


def test_origin_edge_cases() -> None:
    """No Origin: per allow_no_origin; two Origin headers: never; "*": anything."""
    assert OriginPolicy(("self",)).allows([], "h:1")
    assert not OriginPolicy(("self",), allow_no_origin=False).allows([], "h:1")
    assert not OriginPolicy(("*",)).allows(["https://a.com", "https://b.com"], "h")
    assert OriginPolicy(("*",)).allows(["https://anything.example"], None)
    assert OriginPolicy(("null",)).allows(["null"], None)
    assert not OriginPolicy(("self",)).allows(["http://h:1"], None), "no Host, no self"


@pytest.mark.parametrize(
    "entry", ["example.com", "ftp://example.com", "https://example.com/path", "", 3]
)
def test_bad_origin_entries(entry: object) -> None:
    assert origin_entry_problem(entry) is not None


# --- admission ----------------------------------------------------------------------


def admission(**values: object) -> tuple[Admission, Overload]:
    overload = Overload(1.0, 5.0, 0.1)
    limits = LimitsConfig(**{"exempt_networks": ("10.0.0.0/8",), **values})  # type: ignore[arg-type]
    return Admission(limits, overload), overload


def test_connection_rate_per_address() -> None:
    gate, _ = admission(connection_rate=1.0, connection_burst=2.0, connections_per_ip=0)
    assert isinstance(gate.admit("192.0.2.1", 0.0), Ticket)
    assert isinstance(gate.admit("192.0.2.1", 0.0), Ticket)
    refused = gate.admit("192.0.2.1", 0.25)
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.reason, refused.retry_after) == (429, "connection_rate", 0.75)
    assert refused.retry_after_header == "1"
    assert isinstance(gate.admit("192.0.2.2", 0.25), Ticket), "another address has its own"
    assert isinstance(gate.admit("192.0.2.1", 1.0), Ticket), "refilled"


def test_connections_per_address_and_release() -> None:
    gate, _ = admission(connection_rate=0.0, connections_per_ip=2, retry_after=7.0)
    first = gate.admit("192.0.2.1", 0.0)
    assert isinstance(first, Ticket)
    assert isinstance(gate.admit("192.0.2.1", 0.0), Ticket)
    refused = gate.admit("192.0.2.1", 0.0)
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.reason, refused.retry_after_header) == (
        429,
        "ip_connections",
        "7",
    )
    first.release()
    first.release()  # idempotent
    assert gate.per_address == {"192.0.2.1": 1}
    assert isinstance(gate.admit("192.0.2.1", 0.0), Ticket)


def test_ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    def key(ip: str) -> str | None:
        found = address_key(ip)
        return None if found is None else found[0]

    assert key("2001:db8::1") == key("2001:db8::ffff:2") == "2001:db8::/64"
    assert key("2001:db8::1") != key("2001:db8:0:1::1")
    found = address_key("::ffff:192.0.2.1")
    assert found is not None
    assert found[0] == "192.0.2.1"
    assert address_key("not an address") is None


def test_exempt_networks_skip_per_address_limits_not_server_wide_ones() -> None:
    gate, _ = admission(connections_per_ip=1, connection_rate=0.1, max_connections=3)
    tickets = [gate.admit("10.1.2.3", 0.0) for _ in range(3)]
    assert all(isinstance(t, Ticket) for t in tickets)
    full = gate.admit("10.1.2.3", 0.0)
    assert isinstance(full, Refusal)
    assert (full.status, full.reason) == (503, "connections")
    assert gate.open == 3


def test_half_open_connections_per_address_and_in_total() -> None:
    """Connections still sending their request: 429 per address, 503 in total, exemptions
    skip the per-address cap only, and a completed request gives its place back."""
    limits = LimitsConfig(
        exempt_networks=("10.0.0.0/8",), half_open_per_ip=2, max_half_open=4, retry_after=3.0
    )
    gate = HalfOpen(limits)
    first = gate.enter("192.0.2.1")
    assert isinstance(first, Ticket)
    assert isinstance(gate.enter("192.0.2.1"), Ticket)
    refused = gate.enter("192.0.2.1")
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.reason, refused.retry_after_header) == (
        429,
        "ip_half_open",
        "3",
    )
    assert isinstance(gate.enter("10.0.0.1"), Ticket), "exempt from the per-address cap"
    assert isinstance(gate.enter("10.0.0.1"), Ticket)
    full = gate.enter("10.0.0.1")
    assert isinstance(full, Refusal)
    assert (full.status, full.reason) == (503, "half_open")
    first.release()
    first.release()  # idempotent
    assert (gate.open, gate.per_address) == (3, {"192.0.2.1": 1})
    assert isinstance(gate.enter("192.0.2.1"), Ticket)


def test_overload_refuses_with_503_while_the_lag_is_high() -> None:
    gate, overload = admission(connection_rate=0.0, connections_per_ip=0)
    overload.sample(2.0, 10.0)
    refused = gate.admit("192.0.2.1", 10.0)
    assert isinstance(refused, Refusal)
    assert (refused.status, refused.reason) == (503, "overload")
    overload.sample(0.1, 10.5)
    assert isinstance(gate.admit("192.0.2.1", 10.5), Ticket)


def test_shedding_starts_after_shed_after_and_takes_a_bounded_part() -> None:
    overload = Overload(max_lag=0.5, shed_after=2.0, shed_fraction=0.1)
    overload.sample(1.0, 100.0)
    assert overload.to_shed(1000, 100.0) == 0
    overload.sample(1.0, 101.9)
    assert overload.to_shed(1000, 101.9) == 0
    overload.sample(1.0, 102.0)
    assert overload.to_shed(1000, 102.0) == 100
    assert overload.to_shed(3, 102.0) == 1, "at least one"
    assert overload.to_shed(0, 102.0) == 0
    overload.sample(0.2, 102.5)  # below: the run ends
    overload.sample(1.0, 103.0)
    assert overload.to_shed(1000, 103.0) == 0, "a new run starts its own clock"
    assert Overload(0.0, 1.0, 0.5).to_shed(10, 0.0) == 0, "max_lag 0 is off"


# --- publish rate -------------------------------------------------------------------


def test_publish_limiter_warns_then_closes() -> None:
    limiter = PublishLimiter(2.0, 2.0, strikes=2, window=10.0, now=0.0)
    assert [limiter.check(0.0) for _ in range(2)] == [Verdict.ALLOW] * 2
    assert limiter.check(0.0) is Verdict.REFUSE
    assert limiter.retry_after == 0.5
    assert limiter.check(0.1) is Verdict.REFUSE
    assert limiter.check(0.2) is Verdict.CLOSE, "the third refusal within the window"
    fresh = PublishLimiter(2.0, 2.0, strikes=1, window=1.0, now=0.0)
    fresh.check(0.0), fresh.check(0.0)
    assert fresh.check(0.0) is Verdict.REFUSE
    assert fresh.check(1.0) is Verdict.ALLOW
    fresh.check(1.0)
    assert fresh.check(1.2) is Verdict.REFUSE, "the earlier refusal left the window"


# --- tokens -------------------------------------------------------------------------


def hs_auth(**values: object) -> Authenticator:
    config = AuthConfig(enabled=True, secret=SECRET, **values)  # type: ignore[arg-type]
    return Authenticator(config, admin_token=ADMIN_TOKEN)


def test_a_valid_token_grants_its_patterns() -> None:
    grant = hs_auth().verify(hs256(subscribe=["news.*"], publish=["chat"]), time.time())
    assert (grant.subject, grant.subscribe, grant.publish, grant.admin) == (
        "alice",
        ("news.*",),
        ("chat",),
        False,
    )
    assert grant.allows("subscribe", "news.eu")
    assert not grant.allows("subscribe", "chat")
    assert grant.allows("publish", "chat")
    assert grant.expires_at is not None


def test_expiry_is_checked_against_the_given_time_with_leeway() -> None:
    token = hs256(ttl=10)
    now = time.time()
    hs_auth().verify(token, now)
    with pytest.raises(TokenRejected) as raised:
        hs_auth().verify(token, now + 11)
    assert raised.value.expired
    grant = hs_auth(leeway=5.0).verify(token, now + 11)
    assert grant.expires_at is not None
    assert grant.expires_at > now + 11


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: hs256(secret="x" * 40), "Signature verification failed"),
        (lambda: jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"), '"exp"'),
        (lambda: jwt.encode({"exp": "soon"}, SECRET, algorithm="HS256"), "'exp' must be a number"),
        (lambda: hs256(subscribe=[""]), "claim 'subscribe'"),
        (lambda: hs256(admin="yes"), "'admin' must be true or false"),
        (lambda: jwt.encode({"exp": 9e9}, "k" * 64, algorithm="HS512"), "'HS512' is not accepted"),
        (lambda: "a.b", "invalid token"),
    ],
)
def test_bad_tokens(token: object, message: str) -> None:
    with pytest.raises(TokenRejected, match=message):
        hs_auth().verify(token(), time.time())  # type: ignore[operator]


def test_audience_and_issuer_when_configured() -> None:
    auth = hs_auth(audience="broadcaster", issuer="https://id.example")
    good = hs256(aud="broadcaster", iss="https://id.example")
    assert auth.verify(good, time.time()).subject == "alice"
    for bad in (hs256(aud="other", iss="https://id.example"), hs256(aud="broadcaster")):
        with pytest.raises(TokenRejected):
            auth.verify(bad, time.time())


def test_rs256_and_no_algorithm_confusion(tmp_path: Path) -> None:
    """The key follows the algorithm: an HS256 token signed with the RSA *public* key (the
    classic confusion attack) is refused because HS256 is not accepted with that config."""
    keys = rsa_keys(tmp_path)
    pem = keys.public_file.read_text()
    auth = Authenticator(AuthConfig(enabled=True, algorithms=("RS256",), public_key=pem))
    assert auth.verify(keys.sign(subscribe=["a"]), time.time()).subscribe == ("a",)
    # PyJWT refuses to HMAC with a PEM key, so the forgery is built by hand.

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(b'{"exp":9999999999,"admin":true}')
    signature = hmac.new(pem.encode(), body.encode(), hashlib.sha256).digest()
    forged = f"{body}.{b64(signature)}"
    with pytest.raises(TokenRejected, match="'HS256' is not accepted"):
        auth.verify(forged, time.time())


def test_the_admin_token_grants_everything_without_expiry() -> None:
    grant = hs_auth().verify(ADMIN_TOKEN, time.time())
    assert grant.admin
    assert grant.expires_at is None
    assert grant.allows("publish", "anything")
    off = Authenticator(AuthConfig(), admin_token=ADMIN_TOKEN)
    assert off.verify(ADMIN_TOKEN, 0.0).admin, "works with JWT auth off too"
    with pytest.raises(TokenRejected, match="not configured"):
        off.verify(hs256(), time.time())


# --- channel permissions and the admin gate ------------------------------------------


def test_access_rules() -> None:
    token = ChannelPolicy(subscribe=Access.TOKEN, publish=Access.TOKEN)
    grant = Grant(subscribe=("a.*",), publish=())
    assert refuse_subscribe(ChannelPolicy(), "x", None) is None
    refusal = refuse_subscribe(token, "a.b", None)
    assert refusal is not None
    assert "needs a token" in refusal
    assert refuse_subscribe(token, "a.b", grant) is None
    assert refuse_publish(token, "a.b", grant) is not None
    assert refuse_publish(token, "a.b", Grant(admin=True)) is None
    assert refuse_publish(ChannelPolicy(publish=Access.NONE), "a", Grant(admin=True)) is not None
    assert refuse_system_subscribe("$sys.stats", True, True) is None
    assert "admin token" in (refuse_system_subscribe("$sys.stats", False, True) or "")
    assert "loopback" in (refuse_system_subscribe("$sys.stats", False, False) or "")


def test_admin_gate_modes() -> None:
    off = Authenticator(AuthConfig())
    loopback = AdminGate(off, has_token=False, open_=False)
    assert loopback.mode == "loopback"
    assert loopback.check_http(None, None, "127.0.0.1") is None
    assert loopback.check_http(None, None, "::1") is None
    denied = loopback.check_http(None, None, "203.0.113.5")
    assert denied is not None
    assert denied.status == 403
    assert loopback.may_watch(False, "127.0.0.1")
    assert not loopback.may_watch(False, "203.0.113.5")
    opened = AdminGate(off, has_token=False, open_=True)
    assert opened.check_http(None, None, "203.0.113.5") is None
    with_token = AdminGate(
        Authenticator(AuthConfig(), admin_token=ADMIN_TOKEN), has_token=True, open_=True
    )
    assert with_token.mode == "token", "a token always wins over open"
    denied = with_token.check_http(None, None, "127.0.0.1")
    assert denied is not None
    assert denied.status == 401, "loopback gets no favour: a local proxy would pass anyone"
    assert with_token.check_http(f"Bearer {ADMIN_TOKEN}", None, "203.0.113.5") is None
    assert with_token.check_http("Basic abc", ADMIN_TOKEN, None) is None
    assert not with_token.may_watch(False, "127.0.0.1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback(None)


# --- exposure warnings ----------------------------------------------------------------


def test_exposure_warnings_only_off_loopback() -> None:
    assert exposure_warnings(Config()) == []
    exposed = exposure_warnings(
        Config.build(server={"host": "0.0.0.0", "allowed_origins": ["*"]}, admin={"open": True})
    )
    assert len(exposed) == 4
    assert any("TLS" in w for w in exposed)
    careful = Config.build(
        server={"host": "0.0.0.0"},
        defaults={"publish": "none"},
    )
    assert [w for w in exposure_warnings(careful) if "publish" in w] == []
