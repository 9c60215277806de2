"""The address the login throttle uses: the peer, or behind our proxies the first address they did not add."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from federation.app import SETTINGS, client_address
from tests.conftest import make_settings


def request(tmp_path, peer: str, forwarded: str | None, trusted: list[str]) -> web.Request:
    app = web.Application()
    app[SETTINGS] = make_settings(tmp_path, trusted_proxies=trusted)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    transport = type("T", (), {"get_extra_info": lambda self, name, default=None: (peer, 1234)})()
    return make_mocked_request("POST", "/api/v1/auth/token", headers=headers, app=app, transport=transport)


def test_direct_peer(tmp_path):
    assert client_address(request(tmp_path, "203.0.113.7", "198.51.100.1", [])) == "203.0.113.7"


def test_behind_a_trusted_proxy(tmp_path):
    req = request(tmp_path, "10.0.0.2", "198.51.100.1, 10.0.0.3", ["10.0.0.2", "10.0.0.3"])
    assert client_address(req) == "198.51.100.1"


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored(tmp_path):
    assert client_address(request(tmp_path, "203.0.113.7", "1.2.3.4", ["10.0.0.2"])) == "203.0.113.7"


def test_the_client_cannot_hide_behind_a_forged_left_entry(tmp_path):
    req = request(tmp_path, "10.0.0.2", "1.2.3.4, 198.51.100.9", ["10.0.0.2"])
    assert client_address(req) == "198.51.100.9"
