#!/usr/bin/env python3
"""A three-stage pipeline on sagebus: documents go in, answers come out.

  stage "embed"     turns a text into a (toy) vector
  stage "retrieve"  a class-based service: it calls "embed" from inside its handler,
                    and returns the stored texts nearest to the query
  the caller        call_service("retrieve", query, k=2, method="search")

Each stage runs on its own Client, as separate processes would. Run it against a broker:
  ./dev.sh broker &   then   python3 examples/python/pipeline.py
"""
import argparse
import math

import sagebus

DOCUMENTS = ["the broker routes calls", "queues survive a crash",
             "keys authenticate clients", "streams carry tokens"]


def embed_text(text: str) -> list:
    """A toy embedding: letter frequencies."""
    counts = [0] * 26
    for ch in text.lower():
        if "a" <= ch <= "z":
            counts[ord(ch) - ord("a")] += 1
    norm = math.sqrt(sum(c * c for c in counts)) or 1.0
    return [c / norm for c in counts]


class Retrieve:
    """The retrieval stage: its public methods are the service's methods."""

    def __init__(self, client: sagebus.Client):
        self.client = client
        self.index = [(doc, self._embed(doc)) for doc in DOCUMENTS]

    def _embed(self, text: str) -> list:
        # A call to another stage from inside a handler: the same client serves both.
        return self.client.call_service("embed", text, method="vector", timeout=5.0)

    def search(self, query: str, k: int = 1) -> list:
        q = self._embed(query)
        scored = sorted(self.index, key=lambda item: -sum(a * b for a, b in zip(q, item[1])))
        return [doc for doc, _ in scored[:k]]


class Embed:
    def vector(self, text: str) -> list:
        return embed_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="sage-busd endpoint")
    parser.add_argument("query", nargs="?", default="how do clients authenticate")
    args = parser.parse_args()
    with sagebus.Client(args.endpoint, name="stage-embed") as embed_client, \
            sagebus.Client(args.endpoint, name="stage-retrieve") as retrieve_client, \
            sagebus.Client(args.endpoint, name="pipeline-caller") as caller:
        with sagebus.Service(embed_client, "embed", handler=Embed()), \
                sagebus.Service(retrieve_client, "retrieve", handler=Retrieve(retrieve_client)):
            for doc in caller.call_service("retrieve", args.query, k=2, method="search"):
                print(doc)


if __name__ == "__main__":
    main()
