#!/usr/bin/env python3
"""sagebus echo service, as examples/echo_service.cpp: methods echo, fail, whoami.

Prints "ready" once the broker has confirmed the registration; stops gracefully on
Ctrl-C or SIGTERM.
"""
import argparse
import os
import signal
import time

import sagebus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="sage-busd endpoint")
    parser.add_argument("--name", default="echo", help="service name")
    parser.add_argument("--delay-ms", type=int, default=0, help="sleep this long in echo")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C

    with sagebus.Client(args.endpoint) as client:
        service = sagebus.Service(client, args.name)

        @service.method("echo")
        def echo(request: sagebus.Request) -> bytes:
            time.sleep(args.delay_ms / 1000)
            return request.payload

        @service.method("fail")
        def fail(request: sagebus.Request) -> bytes:
            raise RuntimeError("fail requested")  # the caller gets HandlerError

        @service.method("whoami")
        def whoami(request: sagebus.Request) -> bytes:
            return str(os.getpid()).encode()

        service.start()  # registers now, or as soon as the broker is reachable
        try:
            while not service.wait_registered(0.2):
                pass
            print("ready", flush=True)
            while True:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        service.stop()  # unregisters, then finishes the calls it holds


if __name__ == "__main__":
    main()
