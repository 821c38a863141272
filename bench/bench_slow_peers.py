"""How long a peer that sends one byte every half second holds the calling thread.

Runs an image fetch, a webhook POST and a provider request against a loopback server that trickles
its headers (or its body), each with a 2-second timeout, and prints the median time the call took.
Run it on another checkout to compare: ``python bench/bench_slow_peers.py --code /path/to/checkout``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose fetch.py and providers to time")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--trickle-for", type=float, default=12.0, help="seconds the peer keeps trickling")
    args = parser.parse_args()
    sys.path[:0] = [args.code, str(ROOT / "tests")]

    import fetch
    from providers.http import Backend, Deadline, HttpSettings
    from trickle import TrickleServer

    settings = HttpSettings(
        connect_timeout=1,
        read_timeout=args.timeout,
        retries=0,
        backoff=0.01,
        max_bytes=10**6,
        max_pixels=10**7,
    )
    calls = {
        "image fetch": lambda url: fetch.fetch_bytes(
            url, allow_private=True, max_bytes=10**6, timeout=args.timeout
        ),
        "webhook POST": lambda url: fetch.post_json(url, b"{}", {}, allow_private=True, timeout=args.timeout),
        "provider request": lambda url: Backend("bench", url.rsplit("/", 1)[0], settings).request(
            "GET", "/slow.png", Deadline(60)
        ),
    }
    print(
        f"code: {args.code}; timeout {args.timeout:g} s; "
        f"the peer trickles 1 byte / 0.5 s for {args.trickle_for:g} s"
    )
    for mode in ("headers", "body"):
        for name, call in calls.items():
            if name == "webhook POST" and mode == "body":
                continue  # a webhook reads no body
            timings = []
            for _ in range(args.runs):
                server = TrickleServer(mode, 0.5, args.trickle_for)
                started = time.monotonic()
                try:
                    call(server.url())
                    outcome = "answered"
                except Exception as exc:  # noqa: BLE001  (every failure is an outcome to report)
                    outcome = type(exc).__name__
                timings.append(time.monotonic() - started)
                server.close()
            print(
                f"  {name:17} trickled {mode:7}: median {statistics.median(timings):5.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in timings)}; {outcome})"
            )


if __name__ == "__main__":
    main()
