"""The host rules' inputs: the private ranges an operator lists, and the resolvers kept open.
(The rules themselves are tested on the machine, in test_provider_host.py.)"""

from __future__ import annotations

import ipaddress

import pytest

from kova_live.firewall import DEFAULT_DENIED, parse_networks, resolvers


@pytest.mark.parametrize(("given", "networks"), [
    ("10.0.0.0/8,192.168.0.0/16", ["10.0.0.0/8", "192.168.0.0/16"]),
    (" 10.1.2.3/8 , ", ["10.0.0.0/8"]),  # host bits dropped, blanks ignored
    ("none", []), ("NONE", []),
    (",".join(DEFAULT_DENIED), list(DEFAULT_DENIED)),
])  # fmt: skip
def test_private_ranges_parse(given, networks):
    assert [str(n) for n in parse_networks(given)] == networks


@pytest.mark.parametrize("given", ["nope", "10.0.0.0/33", "2001:db8::/32", "10.0.0.0/8,x"])
def test_a_range_that_is_not_one_is_named(given):
    with pytest.raises(ValueError, match="is not an IPv4 network"):
        parse_networks(given)


def test_resolvers_are_the_hosts_ipv4_name_servers_once_each(tmp_path):
    first, second = tmp_path / "resolv.conf", tmp_path / "upstream.conf"
    first.write_text("# a comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch example\n")
    second.write_text("nameserver 10.0.0.2\nnameserver 2001:db8::53\nnameserver 192.168.1.1\n")
    found = resolvers([first, second, tmp_path / "missing.conf"])
    # loopback resolvers are the host's own stub (not reached through the bridge); IPv6 is
    # not on lease networks
    assert found == (ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv4Address("192.168.1.1"))
