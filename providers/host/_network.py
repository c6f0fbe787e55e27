"""The `network` kind: the host's interfaces, through netlink (pyroute2).

Netlink is the kernel's own interface for links and addresses: pyroute2 speaks it
directly, in the instance's network namespace when it names one, so nothing parses the
output of `ip`. Changing a link needs `CAP_NET_ADMIN`; reading needs nothing.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec

from providers.base import (
    JSON,
    InvalidParams,
    Kind,
    Operation,
    PermanentProviderError,
    ProviderError,
    ResourceNotFound,
)

#: The kernel's rules for a link name (dev_valid_name: at most 15 bytes, no `/`, `:` or
#: white space, not `.` or `..`), narrowed to what names are in practice.
IFNAME = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}$"
IfName = Annotated[
    str,
    msgspec.Meta(
        pattern=IFNAME,
        description="an interface name: up to 15 letters, digits, `_`, `.`, `@` or `-`",
    ),
]
#: An IPv4 or IPv6 address, as text (checked by `address_of`).
Address = Annotated[str, msgspec.Meta(min_length=2, max_length=45)]
#: A prefix length (24) or an IPv4 netmask (255.255.255.0).
Netmask = int | Annotated[str, msgspec.Meta(max_length=15)]

T = TypeVar("T")
IFF_UP = 0x1
#: linux/if_arp.h: the types worth naming when the link has no `kind` of its own.
ARPHRD = {1: "ethernet", 772: "loopback", 776: "sit", 778: "gre", 65534: "none"}
COUNTERS = (
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
)


class InterfaceList(msgspec.Struct, forbid_unknown_fields=True):
    #: Only this interface (all when absent).
    name: IfName | None = None


class InterfaceNamed(msgspec.Struct, forbid_unknown_fields=True):
    name: IfName


class AddressParams(msgspec.Struct, forbid_unknown_fields=True):
    name: IfName
    address: Address
    netmask: Netmask
    #: A default route through this gateway, added with the address and removed with it.
    gateway: Address | None = None


KIND = Kind(
    "network",
    "network",
    (
        Operation("list", InterfaceList, mutates=False, summary="interfaces with counters"),
        Operation("up", InterfaceNamed, undo="down", summary="bring an interface up"),
        Operation("down", InterfaceNamed, undo="up", summary="bring an interface down"),
        Operation("add_address", AddressParams, undo="remove_address", summary="add an IP address"),
        Operation(
            "remove_address", AddressParams, undo="add_address", summary="remove an IP address"
        ),
    ),
    summary="the host's network interfaces",
)


def check_name(name: str | None) -> None:
    """The whole name matches (a pattern's `$` lets a trailing newline through)."""
    if name is not None and re.fullmatch(IFNAME[1:-1], name) is None:
        raise InvalidParams("name", f"{name!r} is not an interface name")


def address_of(params: AddressParams) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """The address with its prefix; raises `InvalidParams` naming the field at fault."""
    try:
        address = ipaddress.ip_address(params.address)
    except ValueError:
        raise InvalidParams(
            "address", f"'{params.address}' is not an IPv4 or IPv6 address"
        ) from None
    bits = address.max_prefixlen
    if isinstance(params.netmask, int):
        if not 0 <= params.netmask <= bits:
            raise InvalidParams("netmask", f"a prefix length from 0 to {bits}")
        prefix = params.netmask
    else:
        try:
            if address.version != 4:
                raise ValueError
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{params.netmask}").prefixlen
        except ValueError:
            raise InvalidParams(
                "netmask", "a prefix length (24) or, for IPv4, a netmask (255.255.255.0)"
            ) from None
    if address.is_multicast or address.is_unspecified:
        raise InvalidParams("address", f"{address} cannot be an interface's address")
    interface = ipaddress.ip_interface(f"{address}/{prefix}")
    if params.gateway is not None:
        try:
            gateway = ipaddress.ip_address(params.gateway)
        except ValueError:
            raise InvalidParams("gateway", f"'{params.gateway}' is not an IP address") from None
        if gateway not in interface.network or gateway == address:
            raise InvalidParams(
                "gateway", f"{gateway} is not another address of {interface.network}"
            )
    return interface


if TYPE_CHECKING:
    from pyroute2 import IPRoute


class Netlink:
    """Links and addresses in one network namespace (None: the process's own).

    pyroute2's synchronous socket, each call in a worker thread on an event loop of its
    own: its asyncio socket needs a loop that opens netlink endpoints, which uvloop (the
    loop `serve` runs) does not.
    """

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace

    async def _run(self, work: Callable[[IPRoute], T]) -> T:
        return await asyncio.to_thread(self._in_thread, work)

    def _in_thread(self, work: Callable[[IPRoute], T]) -> T:
        # pyroute2 (160 modules) is imported by the first change, not by every process
        # that reads this module's parameter structs.
        from pyroute2 import IPRoute

        loop = asyncio.SelectorEventLoop()
        # flags=0: never create the namespace (pyroute2's default would).
        options: dict[str, Any] = {} if self.namespace is None else {"netns": self.namespace}
        try:
            with IPRoute(flags=0, use_event_loop=loop, **options) as ipr:
                return work(ipr)
        except FileNotFoundError:
            raise PermanentProviderError(
                f"network namespace '{self.namespace}' does not exist"
            ) from None
        finally:
            loop.close()

    async def interfaces(self, name: str | None = None) -> list[JSON]:
        def dump(ipr: IPRoute) -> tuple[list[Any], list[Any]]:
            return list(ipr.link("dump")), list(ipr.addr("dump"))

        links, addresses = await self._run(dump)
        by_index: dict[int, list[str]] = {}
        for addr in addresses:
            local = addr.get("IFA_LOCAL") or addr.get("IFA_ADDRESS")
            if local is not None:
                by_index.setdefault(addr["index"], []).append(f"{local}/{addr['prefixlen']}")
        found = [_interface(link, by_index.get(link["index"], [])) for link in links]
        if name is not None:
            found = [i for i in found if i["name"] == name]
            if not found:
                raise ResourceNotFound(f"interface {name} does not exist{self._where()}")
        return sorted(found, key=lambda i: i["index"])

    async def interface(self, name: str) -> JSON:
        return (await self.interfaces(name))[0]

    async def set_state(self, name: str, up: bool) -> bool:
        """Bring it up or down; False when it already was."""
        current = await self.interface(name)
        wanted = "up" if up else "down"
        if current["state"] == wanted:
            return False

        def change(ipr: IPRoute) -> None:
            _netlink(lambda: ipr.link("set", index=current["index"], state=wanted), name)

        await self._run(change)
        return True

    async def add_address(self, name: str, interface: Any, gateway: str | None) -> bool:
        """Add it (and a default route through `gateway`); False when it was there."""
        current = await self.interface(name)
        if str(interface) in current["addresses"]:
            return False
        index, ip, prefix = current["index"], str(interface.ip), interface.network.prefixlen

        def change(ipr: IPRoute) -> None:
            _netlink(lambda: ipr.addr("add", index=index, address=ip, prefixlen=prefix), name)
            if gateway is not None:
                _netlink(
                    lambda: ipr.route("add", dst="default", gateway=gateway, oif=index),
                    name,
                    exists_ok=True,
                )

        await self._run(change)
        return True

    async def remove_address(self, name: str, interface: Any, gateway: str | None) -> bool:
        """Remove it (and the default route through `gateway`); False when absent."""
        current = await self.interface(name)
        if str(interface) not in current["addresses"]:
            return False
        index, ip, prefix = current["index"], str(interface.ip), interface.network.prefixlen

        def change(ipr: IPRoute) -> None:
            if gateway is not None:
                _netlink(
                    lambda: ipr.route("del", dst="default", gateway=gateway, oif=index),
                    name,
                    missing_ok=True,
                )
            _netlink(lambda: ipr.addr("del", index=index, address=ip, prefixlen=prefix), name)

        await self._run(change)
        return True

    def _where(self) -> str:
        return "" if self.namespace is None else f" in network namespace '{self.namespace}'"


def _netlink(
    request: Callable[[], Any], name: str, *, exists_ok: bool = False, missing_ok: bool = False
) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        result = request()
        if result is not None and not isinstance(result, (str, bytes, dict)):
            for _ in result:
                pass
    except NetlinkError as exc:
        if exists_ok and exc.code == errno.EEXIST:
            return
        if missing_ok and exc.code in (errno.ESRCH, errno.ENOENT):
            return
        if exc.code in (errno.EPERM, errno.EACCES):
            raise PermanentProviderError(f"{name}: not permitted ({exc})") from None
        if exc.code in (errno.ENODEV, errno.EINVAL, errno.EEXIST, errno.EADDRNOTAVAIL):
            raise PermanentProviderError(f"{name}: {exc.args[-1] if exc.args else exc}") from None
        raise ProviderError(f"{name}: {exc}") from None


def _interface(link: Any, addresses: list[str]) -> JSON:
    info = link.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info is not None else None
    stats = link.get("IFLA_STATS64") or link.get("IFLA_STATS") or {}
    return {
        "name": link.get("IFLA_IFNAME"),
        "index": link["index"],
        "mac": link.get("IFLA_ADDRESS"),
        "mtu": link.get("IFLA_MTU"),
        # The administrative state, which up/down change; `operstate` is the kernel's
        # view of the link (a veth whose peer is down is `lowerlayerdown`).
        "state": "up" if link["flags"] & IFF_UP else "down",
        "operstate": str(link.get("IFLA_OPERSTATE") or "unknown").lower(),
        "type": kind or ARPHRD.get(link["ifi_type"], str(link["ifi_type"])),
        "addresses": addresses,
        "statistics": {counter: int(stats.get(counter, 0)) for counter in COUNTERS},
    }
