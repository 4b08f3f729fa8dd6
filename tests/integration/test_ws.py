"""SIP over WebSocket (RFC 7118) against a ``leansip serve`` process, with the Python ``websockets`` client
as the UA: register over WS, then receive an INVITE from a UDP caller over that same WS connection."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from pathlib import Path

import pytest

from leansip.io.tls import create_self_signed
from tests.integration import test_transports as tt

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect  # noqa: E402

WS_HOST = "df7jal23ls0d.invalid"  # RFC 7118 appendix: a WS client has no reachable address of its own


def ws_register(user: str, branch: str) -> str:
    return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/WS {WS_HOST};branch=z9hG4bK{branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag={branch}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {branch}@ws\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{WS_HOST};transport=ws>\r\nContent-Length: 0\r\n\r\n")


async def recv_final(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 3)
        if not data.startswith(b"SIP/2.0 1"):
            return data


@pytest.mark.parametrize("mode", tt.MODES)
def test_ws_register_then_invite_arrives_over_the_ws_connection(tmp_path: Path, mode: str) -> None:
    server = tt.Server(tmp_path, ["udp:127.0.0.1:0", "ws:127.0.0.1:0"], mode=mode)
    try:
        asyncio.run(_scenario(server.ports["udp"], server.ports["ws"]))
    finally:
        server.stop()


def test_wss_register_then_invite(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem", tmp_path / "key.pem"
    create_self_signed(*cert)
    server = tt.Server(tmp_path, ["udp:127.0.0.1:0", "wss:127.0.0.1:0"], *tt.tls_args(cert))
    try:
        ctx = ssl.create_default_context(cafile=str(cert[0]))
        asyncio.run(_scenario(server.ports["udp"], server.ports["wss"], ctx))
    finally:
        server.stop()


async def _scenario(udp_port: int, ws_port: int, ctx: ssl.SSLContext | None = None) -> None:
    scheme, via = ("wss", "WSS") if ctx is not None else ("ws", "WS")
    async with connect(f"{scheme}://127.0.0.1:{ws_port}", subprotocols=["sip"], compression=None,
                       ssl=ctx) as ws:
        assert ws.subprotocol == "sip"
        await ws.send(ws_register("wsbob", "wsreg1"))
        reply = await asyncio.wait_for(ws.recv(), 3)
        assert isinstance(reply, str)  # UTF-8 SIP goes in text frames (RFC 7118 5.2)
        assert reply.startswith("SIP/2.0 200 ")
        assert "received=127.0.0.1" in reply and ";rport=" in reply

        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        caller.bind(("127.0.0.1", 0))
        caller.setblocking(False)
        try:
            invite = tt.invite_bytes("wsbob", udp_port, caller.getsockname()[1], "udp", "wsinv1")
            caller.sendto(invite, ("127.0.0.1", udp_port))
            got = await asyncio.wait_for(ws.recv(), 3)
            assert isinstance(got, str)
            assert got.startswith(f"INVITE sip:wsbob@{WS_HOST};transport=ws SIP/2.0\r\n")
            top_via = re.search(r"\r\nVia: ([^\r]*)", got, re.IGNORECASE)
            assert top_via is not None
            assert top_via.group(1).startswith(f"SIP/2.0/{via} 127.0.0.1:{ws_port};"), top_via.group(1)
            await ws.send(tt.answer(got.encode()).decode())
            final = await recv_final(caller)
            assert final.startswith(b"SIP/2.0 200 "), final[:60]
            assert b"branch=z9hG4bKwsinv1" in final
        finally:
            caller.close()


def test_ws_without_sip_subprotocol_is_refused(tmp_path: Path) -> None:
    server = tt.Server(tmp_path, ["udp:127.0.0.1:0", "ws:127.0.0.1:0"])

    async def attempt() -> None:
        async with connect(f"ws://127.0.0.1:{server.ports['ws']}") as ws:
            await ws.send(ws_register("nosub", "nosub1"))
            await asyncio.wait_for(ws.recv(), 3)

    try:
        with pytest.raises((websockets.exceptions.InvalidHandshake, websockets.exceptions.ConnectionClosed)):
            asyncio.run(attempt())
    finally:
        server.stop()
