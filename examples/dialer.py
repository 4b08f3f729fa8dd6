"""A dialer on leansip's phone API: call a number, record what is said for 10 seconds, hang up.

    python examples/dialer.py --server 127.0.0.1:5060 --user bot --password secret sip:bob@example.com out.flac
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from leansip.ua import CallFailed, Phone, PhoneOptions, RegistrationError


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="HOST:PORT of the registrar/proxy")
    p.add_argument("--user", required=True)
    p.add_argument("--password")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to record (10)")
    p.add_argument("target", help="whom to call (a sip: URI)")
    p.add_argument("recording", help="where to write what the callee says (.wav or .flac)")
    args = p.parse_args()
    host, _, port = args.server.rpartition(":")
    options = PhoneOptions(user=args.user, password=args.password, server=(host, int(port)))
    async with await Phone.start(options) as phone:
        try:
            await phone.registered()
            call = await phone.call(args.target, timeout=30)
        except (RegistrationError, CallFailed) as exc:
            print(f"dialer: {exc}", file=sys.stderr)
            return 1
        call.start_recording(args.recording)
        if await call.wait_ended(args.seconds) is None:  # the callee did not hang up first
            call.hangup()
            await call.wait_ended(5)
        print(f"dialer: recorded {args.recording}; the call ended: {call.ended.reason if call.ended else '?'}")
        phone.unregister()
        return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
