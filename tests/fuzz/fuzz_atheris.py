"""Coverage-guided fuzzing of the SIP message core with atheris (not part of the pytest suite).

The harness is the one of tests/fuzz/test_fuzz_parser.py: parse, validate, read every lazy view, build a
reply, forward; anything but SipParseError is a crash. Run for as long as you like::

    pip install atheris
    mkdir -p var/fuzz-corpus && cp tests/data/sip/*.sip ../shared/sip-torture/rfc4475/*.dat var/fuzz-corpus/
    python3 tests/fuzz/fuzz_atheris.py var/fuzz-corpus -max_len=4096

Put any crasher it finds into KNOWN_CRASHERS in test_fuzz_parser.py once it is fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    import atheris

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    with atheris.instrument_imports():
        from leansip.sip import message, uri  # noqa: F401 - instrumented for coverage feedback
        from tests.fuzz.test_fuzz_parser import exercise

    def one_input(data: bytes) -> None:
        exercise(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
