"""Seed 000's network endpoints over the `host` provider's `network` kind.

`GET /network/interfaces` reads at once; up, down and the address changes are
one-task workflows answered 202 with their id (`wait` holds the answer until it ends).
`?instance=` picks the host instance where several are configured. Up, down and the
removal of an address take `check_mode` and `wait` in the query (they have no body);
adding an address takes them in its body, beside the seed's fields.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED

from orchestrator.api.host.common import Change, ChangeOut, host_change, host_read
from orchestrator.http.envelope import Envelope
from providers.host._network import Address, Netmask

Instance = Annotated[
    str | None, Parameter(query="instance", max_length=64, description="a host instance")
]


class InterfacesOut(msgspec.Struct):
    #: name, mac, mtu, state (administrative: up or down), operstate, type, addresses
    #: (`192.168.1.100/24`), statistics (rx/tx bytes, packets, errors, dropped), index.
    interfaces: list[dict[str, Any]]


class AddressIn(msgspec.Struct, forbid_unknown_fields=True):
    """Seed 000's body, and how to run the change."""

    address: Address
    #: A prefix length (24) or an IPv4 netmask (255.255.255.0).
    netmask: Netmask
    #: Adds a default route through it (removed with the address).
    gateway: Address | None = None
    check_mode: bool = False
    wait: bool = False


class NetworkController(Controller):
    path = "/network/interfaces"
    tags = ["host"]

    @get("/", summary="The host's network interfaces, with addresses and counters")
    async def list(self, state: State, instance: Instance = None) -> Envelope[InterfacesOut]:
        found = await host_read(state, "network", "list", {}, instance)
        return Envelope(InterfacesOut(interfaces=found["interfaces"]))

    @put("/{name:str}/up", status_code=HTTP_202_ACCEPTED, summary="Bring an interface up")
    async def up(
        self,
        state: State,
        request: Request[Any, Any, Any],
        name: str,
        check_mode: bool = False,
        wait: bool = False,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        return await host_change(
            state,
            request,
            "network",
            "up",
            {"name": name},
            Change(check_mode, wait),
            instance,
            f"interface {name}: up",
        )

    @put("/{name:str}/down", status_code=HTTP_202_ACCEPTED, summary="Bring an interface down")
    async def down(
        self,
        state: State,
        request: Request[Any, Any, Any],
        name: str,
        check_mode: bool = False,
        wait: bool = False,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        return await host_change(
            state,
            request,
            "network",
            "down",
            {"name": name},
            Change(check_mode, wait),
            instance,
            f"interface {name}: down",
        )

    @post("/{name:str}/address", status_code=HTTP_202_ACCEPTED, summary="Add an IP address")
    async def add_address(
        self,
        state: State,
        request: Request[Any, Any, Any],
        name: str,
        data: AddressIn,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        params = _address(name, data.address, data.netmask, data.gateway)
        return await host_change(
            state,
            request,
            "network",
            "add_address",
            params,
            Change(data.check_mode, data.wait),
            instance,
            f"interface {name}: add {data.address}/{data.netmask}",
        )

    @delete(
        "/{name:str}/address",
        status_code=HTTP_202_ACCEPTED,
        summary="Remove an IP address (the query names it: ?address=…&netmask=…)",
    )
    async def remove_address(
        self,
        state: State,
        request: Request[Any, Any, Any],
        name: str,
        address: Annotated[str, Parameter(max_length=45)],
        netmask: Annotated[str, Parameter(max_length=15)],
        gateway: Annotated[str | None, Parameter(max_length=45)] = None,
        check_mode: bool = False,
        wait: bool = False,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        mask: int | str = int(netmask) if netmask.isdigit() else netmask
        return await host_change(
            state,
            request,
            "network",
            "remove_address",
            _address(name, address, mask, gateway),
            Change(check_mode, wait),
            instance,
            f"interface {name}: remove {address}/{netmask}",
        )


def _address(name: str, address: str, netmask: int | str, gateway: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "address": address, "netmask": netmask}
    if gateway is not None:
        params["gateway"] = gateway
    return params
