"""The provider host's rules that wall lease networks off (``iptables``).

Every deployment's containers on a provider sit on a Docker bridge network of their own, whose
Linux bridge the agent names ``kova<n>`` (:mod:`kova_live.runner`). Docker already keeps
separate bridges apart (its ``DOCKER-ISOLATION`` chains). What Docker allows, and these rules
refuse, is traffic from a lease network:

- to the provider host itself (``INPUT``): the agent's machine answers on its own addresses,
  including each bridge's gateway, for SSH, the orchestrator if it runs there, databases...
  Chain ``KOVA-INPUT``, jumped to from the top of ``INPUT`` for packets coming in on ``kova+``;
- to the private ranges the operator lists (``DOCKER-USER``, which Docker evaluates before its
  own forwarding rules): the provider's LAN, a cloud's metadata service (169.254.169.254).
  Chain ``KOVA-FORWARD``. DNS (port 53) to the host's own resolvers stays open: Docker's
  embedded DNS server forwards a container's lookups from the container's own network, and a
  resolver is often at a private address.

Replies to connections made to a container (the ingress fetching a page through a published
port) pass: only new connections from a lease network are refused. A refused TCP connection
is reset and anything else gets ICMP port-unreachable, so a tenant's program fails at once
rather than after a timeout.

The chains are host-wide: every agent on the machine writes the same rules, so the last one
started sets the private ranges. Applying is idempotent (flush and fill the chains, jump to
them once), and runs again at each agent start: a Docker restart keeps ``DOCKER-USER``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BRIDGE_PREFIX",
    "DEFAULT_DENIED",
    "Firewall",
    "FirewallError",
    "parse_networks",
]

BRIDGE_PREFIX = "kova"
"""Lease networks' Linux bridges are named ``kova<n>``; the rules match ``kova+``."""

DEFAULT_DENIED = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918: the provider's LAN
    "100.64.0.0/10",  # carrier-grade NAT
    "169.254.0.0/16",  # link-local: cloud metadata services live here
)  # fmt: skip
"""Private ranges a lease network may not reach unless the operator says otherwise."""

INPUT_CHAIN, FORWARD_CHAIN = "KOVA-INPUT", "KOVA-FORWARD"

Run = Callable[[Sequence[str]], subprocess.CompletedProcess]


class FirewallError(Exception):
    """The rules cannot be set (no iptables, not root, Docker does not manage iptables)."""


def parse_networks(value: str) -> tuple[ipaddress.IPv4Network, ...]:
    """A comma-separated list of IPv4 networks (``none``: the empty list). Raises ValueError
    naming the item that is not one."""
    if value.strip().lower() == "none":
        return ()
    found = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            found.append(ipaddress.IPv4Network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IPv4 network such as 10.0.0.0/8 ({exc})") from exc
    return tuple(found)


def _run(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


RESOLV_CONFS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
"""Where the host's name servers are listed (the second is systemd-resolved's upstreams, which
Docker gives containers when the first names only its local stub)."""


def resolvers(files: Iterable[Path] = RESOLV_CONFS) -> tuple[ipaddress.IPv4Address, ...]:
    """The host's IPv4 name servers."""
    found: list[ipaddress.IPv4Address] = []
    text = ""
    for path in files:
        with contextlib.suppress(OSError):
            text += path.read_text() + "\n"
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.IPv4Address(parts[1])
            except ValueError:
                continue  # an IPv6 resolver: lease networks have no IPv6
            if address not in found and not address.is_loopback:
                found.append(address)
    return tuple(found)


@dataclass
class Firewall:
    """The rules for ``denied`` private ranges (see the module's docs)."""

    denied: tuple[ipaddress.IPv4Network, ...]
    run: Run = _run
    dns: Iterable[ipaddress.IPv4Address] = ()

    def _iptables(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = self.run(["iptables", "-w", "5", *args])
        if check and done.returncode != 0:
            raise FirewallError(f"iptables {' '.join(args)}: {done.stderr.strip()}")
        return done

    def check(self) -> None:
        """Raise :class:`FirewallError` unless the rules can be set here."""
        if shutil.which("iptables") is None:
            raise FirewallError("iptables is not installed (Debian: apt-get install iptables)")
        if self._iptables("-S", "DOCKER-USER", check=False).returncode != 0:
            raise FirewallError(
                "the chain DOCKER-USER is missing: Docker does not manage iptables on this "
                "host (dockerd --iptables=false?), so it does not keep lease networks apart"
            )

    def apply(self) -> None:
        """Write the rules (idempotent). Raises :class:`FirewallError`."""
        self.check()
        refuse = ("-j", "REJECT")  # ICMP port-unreachable; TCP gets a reset (below)
        for chain in (INPUT_CHAIN, FORWARD_CHAIN):
            if self._iptables("-n", "-L", chain, check=False).returncode != 0:
                self._iptables("-N", chain)
            self._iptables("-F", chain)
        established = ("-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN")
        self._iptables("-A", INPUT_CHAIN, *established)
        self._iptables("-A", INPUT_CHAIN, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
        self._iptables("-A", INPUT_CHAIN, *refuse)
        self._iptables("-A", FORWARD_CHAIN, *established)
        # to a lease network: Docker's isolation decides (its own network passes, others not)
        self._iptables("-A", FORWARD_CHAIN, "-o", f"{BRIDGE_PREFIX}+", "-j", "RETURN")
        for server in self.dns:
            for proto in ("udp", "tcp"):
                self._iptables("-A", FORWARD_CHAIN, "-d", str(server), "-p", proto,
                               "--dport", "53", "-j", "RETURN")  # fmt: skip
        for network in self.denied:
            self._iptables("-A", FORWARD_CHAIN, "-d", str(network), "-p", "tcp", "-j", "REJECT",
                           "--reject-with", "tcp-reset")  # fmt: skip
            self._iptables("-A", FORWARD_CHAIN, "-d", str(network), *refuse)
        self._jump("INPUT", INPUT_CHAIN)
        self._jump("DOCKER-USER", FORWARD_CHAIN)

    def _jump(self, chain: str, target: str) -> None:
        rule = ("-i", f"{BRIDGE_PREFIX}+", "-j", target)
        if self._iptables("-C", chain, *rule, check=False).returncode != 0:
            self._iptables("-I", chain, "1", *rule)

    def describe(self) -> str:
        """One line for the agent's start-up message."""
        ranges = ", ".join(str(n) for n in self.denied) or "none"
        return f"lease networks refused the host's own ports and {ranges}"
