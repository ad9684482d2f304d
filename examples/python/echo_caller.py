#!/usr/bin/env python3
"""sagebus echo caller, as examples/echo_caller.cpp: calls <service>.echo and prints
the reply; on failure prints "STATUS: message" to stderr and exits 1."""
import argparse
import sys

import sagebus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("payload", nargs="?", default="hello", help="what to send")
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="sage-busd endpoint")
    parser.add_argument("--service", default="echo", help="service to call")
    parser.add_argument("--count", type=int, default=1, help="calls to make, one after another")
    parser.add_argument("--timeout", type=float, default=5.0, help="timeout of each call, s")
    args = parser.parse_args()
    with sagebus.Client(args.endpoint) as client:
        try:
            for _ in range(args.count):
                reply = client.call(args.service, "echo", args.payload.encode(),
                                    timeout=args.timeout, wait_for_ready=True)
            print(reply.decode())
        except sagebus.Error as e:
            print(e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
