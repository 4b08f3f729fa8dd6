"""An auto-attendant on leansip's phone API: answer, play a prompt, read a digit, transfer to an extension.

    python examples/auto_attendant.py --server 127.0.0.1:5060 --user ivr --password secret \\
        --prompt welcome.wav --extension 1=sip:sales@example.com --extension 2=sip:support@example.com

Every call is answered and handled in its own task; the caller hears the prompt, presses a key, and is transferred
(blind, REFER) to that key's extension. A key without an extension, or no key within 10 s, hears the prompt once
more, then the call ends.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from leansip.ua import CallFailed, Phone, PhoneCall, PhoneError, PhoneOptions


async def attend(call: PhoneCall, prompt: Path, extensions: dict[str, str]) -> None:
    try:
        await call.answer()
        for _attempt in range(2):
            await call.play(prompt)  # digits pressed during the prompt are kept for read_digits
            digit = await call.read_digits(1, timeout=10)
            if digit in extensions:
                result = await call.transfer(extensions[digit])  # hangs up once the caller is through
                print(f"{call.peer}: pressed {digit}, transfer {'done' if result.succeeded else 'failed'}")
                if result.succeeded:
                    return
            if call.ended is not None:
                return
        call.hangup()
    except (CallFailed, PhoneError) as exc:
        print(f"{call.peer}: {exc}")
        call.hangup()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="HOST:PORT of the registrar/proxy")
    p.add_argument("--user", required=True)
    p.add_argument("--password")
    p.add_argument("--prompt", type=Path, required=True, help="the greeting (WAV, FLAC, OGG, MP3 ...)")
    p.add_argument("--extension", action="append", default=[], metavar="KEY=URI")
    p.add_argument("--calls", type=int, default=0, help="stop after this many calls (0: never)")
    args = p.parse_args()
    host, _, port = args.server.rpartition(":")
    extensions = dict(e.split("=", 1) for e in args.extension)
    options = PhoneOptions(user=args.user, password=args.password, server=(host, int(port)), max_calls=20)
    async with await Phone.start(options) as phone:
        await phone.registered()
        print(f"auto-attendant: registered as {args.user}", flush=True)
        tasks: set[asyncio.Task[None]] = set()
        handled = 0
        while args.calls == 0 or handled < args.calls:
            call = await phone.next_call()
            if call is None:
                continue
            task = asyncio.create_task(attend(call, args.prompt, extensions))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            handled += 1
        await asyncio.gather(*tasks)
        phone.unregister()


if __name__ == "__main__":
    asyncio.run(main())
