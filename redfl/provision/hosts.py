"""``HOSTS.toml``: which machine runs which part of a relay tree. No Ray.

An example for a depth-1 tree with two aggregators, on two machines::

    ray_port = 6379              # the Ray head's port, on the head host

    [hosts.alpha]                # the head: Ray head, edge server, routing proxy
    address = "10.0.0.1"         # where the other hosts (and devices) reach it
    head = true

    [hosts.beta]
    address = "10.0.0.2"
    sites = ["agg-2"]            # subtrees that run here: agg-2 and everything below it
    cpus = 4                     # optional: Ray CPUs of this host (default: Ray's count)
    ray_ports = 20000            # optional: the first of 200 ports for this host's Ray node

A listed site is an aggregator or an LCP; its whole subtree (aggregators, LCPs and, in a
hierarchical run, the clients under them) runs on that host, and no listed site may lie
inside another's subtree. Whatever no host lists runs on the head. A relay runs where every
LCP whose messages cross it runs, or on the head when they are spread over several hosts.

Exactly one host is the head. ``ray_ports`` gives the host's Ray node fixed ports (its node
manager, object manager, agents, metrics and workers take ``ray_ports`` to
``ray_ports + 199``; the head's client server and dashboard too), so that several nodes can
share one machine or a firewall can be opened for them; without it Ray picks its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from redfl.core.config import ConfigError, Strict, load_toml
from redfl.topology.tree import RelayTree, SiteKind

__all__ = ["HostConfig", "HostsConfig", "Placement", "load_hosts", "local_hosts", "place"]

RAY_PORTS = 200
"""Ports a host's Ray node takes from its ``ray_ports`` on."""
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
PINNABLE = frozenset({"aggregator", "lcp"})


class HostConfig(Strict):
    """One machine of ``HOSTS.toml``."""

    address: str
    """The IP address or DNS name the other hosts and the devices reach it at."""
    head: bool = False
    """Whether it runs the Ray head, the edge server and the routing proxy."""
    sites: list[str] = Field(default_factory=list, max_length=10_000)
    """The aggregators and LCPs whose subtrees run here."""
    cpus: int | None = Field(default=None, ge=0, le=4096)
    """Ray CPUs of the host (default: Ray's own count)."""
    ray_ports: int | None = Field(default=None, ge=1024, le=65535 - RAY_PORTS)
    """The first of the 200 fixed ports of its Ray node (default: Ray picks)."""
    object_store_mb: int | None = Field(default=None, ge=75, le=1_000_000)
    """Ray's object store on the host, in MiB (default: Ray's share of the memory)."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            raise ValueError("an address is an IP address or a DNS name")
        return value


class HostsConfig(Strict):
    """``HOSTS.toml``: the Ray head's port and the hosts."""

    ray_port: int = Field(default=6379, ge=1, le=65535)
    hosts: dict[str, HostConfig] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _names(cls, value: dict[str, HostConfig]) -> dict[str, HostConfig]:
        for name in value:
            if not _HOST_NAME.match(name):
                raise ValueError(
                    f"host name {name!r}: 1-64 letters, digits, '-' or '_', from a letter or digit"
                )
        return value

    @model_validator(mode="after")
    def _one_head(self) -> HostsConfig:
        heads = [name for name, host in self.hosts.items() if host.head]
        if len(heads) != 1:
            raise ValueError(f"exactly one host has head = true, got {len(heads)} ({heads})")
        return self

    @property
    def head(self) -> str:
        """The head host's name."""
        return next(name for name, host in self.hosts.items() if host.head)


def load_hosts(path: Path) -> HostsConfig:
    """Read ``HOSTS.toml``.

    Raises
    ------
    ConfigError
        Naming the file, the field at fault and what is allowed.
    """
    return load_toml(path, HostsConfig, f"--hosts {path}")


def local_hosts(address: str = "127.0.0.1") -> HostsConfig:
    """One host, the head, that runs everything (a folder written without ``--hosts``)."""
    return HostsConfig(hosts={"local": HostConfig(address=address, head=True)})


@dataclass(frozen=True)
class Placement:
    """Where every site of a tree runs.

    Attributes
    ----------
    hosts : HostsConfig
        The hosts.
    tree : RelayTree
        The tree.
    site_host : dict[str, str]
        Site name -> host name, for every site of the tree, in site order.
    pins : dict[str, tuple[str, ...]]
        Host name -> the sites listed for it (pinned in a hierarchical run), in site order.
    """

    hosts: HostsConfig
    tree: RelayTree
    site_host: dict[str, str]
    pins: dict[str, tuple[str, ...]]

    def address(self, site: str) -> str:
        """The address of the host that runs ``site``."""
        return self.hosts.hosts[self.site_host[site]].address

    def on(self, host: str, kind: SiteKind) -> list[str]:
        """The sites of ``kind`` that run on ``host``, in site order."""
        return [s.name for s in self.tree.of_kind(kind) if self.site_host[s.name] == host]

    @property
    def pinned(self) -> tuple[str, ...]:
        """Every listed site, in site order (the hierarchy's ``pin``)."""
        listed = {site for sites in self.pins.values() for site in sites}
        return tuple(s.name for s in self.tree.sites if s.name in listed)


def place(tree: RelayTree, hosts: HostsConfig) -> Placement:
    """Put every site of ``tree`` on a host (see the module docstring).

    Raises
    ------
    ConfigError
        For a listed site that is not an aggregator or LCP of the tree, is listed twice,
        or lies inside another listed site's subtree.
    """
    listed: dict[str, str] = {}
    for host, config in hosts.hosts.items():
        for site in config.sites:
            where = f"hosts.{host}.sites"
            if site not in tree or tree.site(site).kind not in PINNABLE:
                raise ConfigError(f"{where}: {site!r} is not an aggregator or LCP of the tree")
            if site in listed:
                raise ConfigError(f"{where}: {site!r} is listed for host {listed[site]!r} too")
            listed[site] = host
    for site, host in listed.items():
        above = [s for s in tree.path_to_root(site)[1:] if s in listed]
        if above:
            raise ConfigError(
                f"hosts.{host}.sites: {site!r} lies inside the subtree of {above[0]!r} "
                f"(listed for host {listed[above[0]]!r}); list subtrees that do not overlap"
            )
    head = hosts.head
    site_host: dict[str, str] = {}
    for one in tree.sites:
        if one.kind == "relay":
            continue
        owner = next((listed[s] for s in tree.path_to_root(one.name) if s in listed), head)
        site_host[one.name] = owner
    for relay in tree.of_kind("relay"):
        under = {site_host[lcp] for lcp in tree.lcps_under(relay.name)}
        site_host[relay.name] = under.pop() if len(under) == 1 else head
    ordered = {s.name: site_host[s.name] for s in tree.sites}
    pins = {
        host: tuple(s.name for s in tree.sites if listed.get(s.name) == host)
        for host in hosts.hosts
    }
    return Placement(hosts, tree, ordered, pins)
