"""``veritally close``: close the night (operators, through Envoy).

Calls ingest's ``CloseNight`` with an operator's certificate
(``spiffe://<td>/operator/<name>``; Envoy refuses any other role with
PERMISSION_DENIED). From then on ingest accepts no new record, aggregation marks its
results final once it has counted every record logged at the close, and publication signs
one last cut with ``final`` set and no cut after it (docs/adr/0081-the-final-cut.md).
A second close changes nothing and prints the first.

Prints the close as one JSON object on stdout: ``closed_at_records`` (what the final cut
covers), ``close_time`` (RFC 3339 UTC) and ``closed_by``. Exit status 0 when closed, 1
when ingest refused or could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import grpc

from veritally.cli.serve import add_tls_arguments, tls_from_args
from veritally.rpc.channel import aio_channel
from veritally_client.protocol.pb import ingest_pb2, ingest_pb2_grpc

# Seconds to wait for ingest: it first commits the captures decided before the close.
DEADLINE_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``close`` arguments."""
    parser.add_argument("--target", required=True, help="HOST:PORT of ingest (Envoy's edge)")
    parser.add_argument("--tls-server-name", help="TLS name of ingest, if not the host")
    add_tls_arguments(parser)


async def _close(args: argparse.Namespace) -> ingest_pb2.CloseNightResponse:
    tls = tls_from_args(args)
    async with aio_channel(args.target, tls=tls, server_name=args.tls_server_name) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        response: ingest_pb2.CloseNightResponse = await stub.CloseNight(
            ingest_pb2.CloseNightRequest(), timeout=DEADLINE_S
        )
        return response


def run(args: argparse.Namespace) -> int:
    """Close the night and print the close."""
    try:
        closed = asyncio.run(_close(args))
    except grpc.aio.AioRpcError as e:
        print(f"veritally close: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "closed_at_records": closed.closed_at_records,
                "close_time": closed.close_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "closed_by": closed.closed_by,
            }
        )
    )
    return 0
