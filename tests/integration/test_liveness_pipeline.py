"""The whole write path, stuck on a record: real ingest, aggregation and publication on
real gRPC sockets and SQLite, and the SDK and its CLI on the read side.

Ingest holds a record no stream page can carry (padded past the gRPC message limit, as
a store accepted before acta sizes were bounded holds it) and goes on accepting actas.
Publication goes on heartbeating; the signed cuts show the lag grow while the records
they cover stay put, the SDK raises StalledError, the CLI exits 5, and both aggregation
and publication log their alarm.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.pub_support import make_publisher, publication_config
from tests.write_path_support import all_actas, poison_ingest_log, small_election
from veritally.aggregation.service import start_aggregation
from veritally.ingest.app import IngestService, start_ingest
from veritally.publication.service import start_publication
from veritally.rpc import MAX_MESSAGE_BYTES, aio_channel
from veritally_client import Client, ClientConfig, StalledError, load_trust_root
from veritally_client._cli import EXIT_STALLED, main
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

ELECTION = small_election()
# Publication's cut interval, in seconds: many heartbeats within the test.
INTERVAL_S = 0.2
# The client's stall limit, in seconds of signed cut time: a few aggregation retries.
MAX_STALL_S = 3.0
# Upper bound on the whole scenario, in seconds (about MAX_STALL_S normally).
SCENARIO_S = 30.0


async def _ingest(tmp_path: Path) -> IngestService:
    return await start_ingest(
        election=ELECTION,
        db_path=tmp_path / "ingest.db",
        address="127.0.0.1:0",
        double_capture=False,
    )


async def _submit(port: int, actas: list[acta_pb2.Acta]) -> None:
    async with aio_channel(f"127.0.0.1:{port}") as channel:
        await ingest_pb2_grpc.IngestServiceStub(channel).SubmitActas(
            iter([ingest_pb2.SubmitActasRequest(actas=actas)]), wait_for_ready=True
        )


async def test_heartbeats_over_a_poison_record_show_a_growing_lag_and_the_sdk_reports_a_stall(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="veritally")
    actas = all_actas(ELECTION)
    ingest = await _ingest(tmp_path)
    await _submit(ingest.port, actas[:3])
    await ingest.stop()
    poison_ingest_log(
        tmp_path / "ingest.db", ELECTION, actas[3], sequence=3, size=MAX_MESSAGE_BYTES + 1024
    )
    ingest = await _ingest(tmp_path)
    agg = await start_aggregation(
        election=ELECTION,
        db_path=tmp_path / "agg.db",
        address="127.0.0.1:0",
        ingest_target=f"127.0.0.1:{ingest.port}",
    )
    publisher = make_publisher(tmp_path)
    config = publication_config(
        tmp_path, publisher, f"127.0.0.1:{agg.port}", interval=INTERVAL_S, bundle=False
    )
    publication = await start_publication(config)
    trust_root_file = publisher.trust_root_dir / "trust-root-v1.binpb"
    state_dir = tmp_path / "client"
    seen: list[tuple[int, int | None]] = []
    try:
        with Client(
            endpoint=f"127.0.0.1:{publication.port}",
            trust_root=load_trust_root(trust_root_file),
            state_dir=state_dir,
            unsafe_plaintext=True,
            config=ClientConfig(max_stall_seconds=MAX_STALL_S),
        ) as client:
            for _ in range(500):  # bounded: 5 s at 10 ms
                if publication.engine.latest_number >= 1:
                    break
                await asyncio.sleep(0.01)
            stalled: StalledError | None = None
            pending = iter(actas[4:])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SCENARIO_S
            while stalled is None and loop.time() < deadline:
                # Ingest goes on accepting while aggregation cannot get past record 3.
                acta = next(pending, None)
                if acta is not None:
                    await _submit(ingest.port, [acta])
                try:
                    cut = await asyncio.to_thread(client.latest)
                except StalledError as e:
                    stalled = e
                else:
                    seen.append((cut.acta_records, cut.ingest_records))
                await asyncio.sleep(0.25)
        assert stalled is not None, f"no stall reported; cuts seen {seen}"
        # Every heartbeat covered the same 3 records while saying ingest had more and more.
        assert {acta for acta, _ in seen} == {3}
        figures = [f for _, f in seen if f is not None]
        assert len(figures) == len(seen) >= 2
        assert figures == sorted(figures)
        first_lag = figures[0] - 3
        assert first_lag > 0
        assert stalled.cut.acta_records == 3
        assert stalled.cut.lag_records is not None
        assert stalled.cut.lag_records > first_lag  # the lag grew while the cuts heartbeat
        assert stalled.stalled_seconds > MAX_STALL_S
        # The CLI (a cron job on the same state) exits with the stall code.
        code = await asyncio.to_thread(
            main,
            [
                "--endpoint",
                f"127.0.0.1:{publication.port}",
                "--unsafe-plaintext",
                "--trust-root",
                str(trust_root_file),
                "--state-dir",
                str(state_dir),
                "--max-stall",
                str(MAX_STALL_S),
                "latest",
            ],
        )
        assert code == EXIT_STALLED
        # Both services alarmed, naming the record and the lag.
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("aggregation stuck at record 3" in m for m in messages)
        assert any("publication stalled: the log covers 3 acta records" in m for m in messages)
    finally:
        await publication.stop(grace=0.1)
        await agg.stop()
        await ingest.stop()
