#!/usr/bin/env python3
"""RabbitMQ's own CPU per GiB of chunk jobs, by queue type.

What the ingest path asks of the broker, without reelay around it: 4 MiB
persistent messages published with confirms (one in flight: pika's
blocking channel waits for each; a PATCH keeps two), consumed with manual acks (prefetch 2), through a quorum queue (what
reelay declares), a classic v2 durable queue and a stream. Prints the
broker's (beam.smp) CPU seconds per GiB for each, measured in the same run,
and the ratio against the quorum queue. Needs pika (pip install pika) and
a local RabbitMQ (guest/guest).

    python3 bench/queue_types.py [--gib 1] [--runs 2]
"""

import argparse
import os
import subprocess
import time
import uuid

import pika

MIB = 1 << 20


def broker_cpu() -> float:
    """CPU seconds the broker's Erlang VM has used so far."""
    pids = subprocess.run(["pgrep", "-x", "beam.smp"], capture_output=True, text=True).stdout.split()
    if not pids:
        raise SystemExit("no beam.smp: is RabbitMQ running?")
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def run(kind: str, messages: int, size: int) -> float:
    params = pika.ConnectionParameters("127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"),
                                       frame_max=131072, heartbeat=0)
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    queue = f"bench.queue-types.{kind}.{uuid.uuid4()}"
    args = {"quorum": {"x-queue-type": "quorum"},
            "classic": {"x-queue-type": "classic", "x-queue-version": 2},
            "stream": {"x-queue-type": "stream"}}[kind]
    channel.queue_declare(queue, durable=True, arguments=args)
    channel.confirm_delivery()
    body = os.urandom(size)
    properties = pika.BasicProperties(delivery_mode=2)
    started = broker_cpu()
    # pika's blocking channel waits for each confirm: one in flight, a
    # little stricter than reelay's two.
    for _ in range(messages):
        channel.basic_publish("", queue, body, properties, mandatory=True)
    channel.basic_qos(prefetch_count=2)
    received = 0
    consume_args = {"x-stream-offset": "first"} if kind == "stream" else None
    for method, _, data in channel.consume(queue, arguments=consume_args, inactivity_timeout=30):
        if method is None:
            raise SystemExit(f"{kind}: only {received} of {messages} messages came back")
        assert len(data) == size
        channel.basic_ack(method.delivery_tag)
        received += 1
        if received == messages:
            break
    channel.cancel()
    used = broker_cpu() - started
    channel.queue_delete(queue)
    connection.close()
    return used * (1 << 30) / (messages * size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    size = 4 * MIB
    messages = int(args.gib * 1024 * MIB / size)
    results = {}
    for _ in range(args.runs):
        for kind in ("quorum", "classic", "stream"):
            results.setdefault(kind, []).append(run(kind, messages, size))
    quorum = min(results["quorum"])
    for kind, runs in results.items():
        best = min(runs)
        figures = " / ".join(f"{r:.2f}" for r in runs)
        print(f"{kind:<8} broker CPU s/GiB: {figures}  (best {best:.2f}, {best / quorum:.2f} x quorum)")


if __name__ == "__main__":
    main()
