"""Ingest checks the captures it loads back from its store instead of trusting them.

The attack: someone with write access to ingest's store (its SQLite file or its
PostgreSQL database; the test runs on both) replaces the acta bytes of
a pending (first) capture with other figures, keeping its digest. When a second
operator then captures the real figures, the digests agree and the stored bytes, the
forged figures, would be logged and published.
"""

from __future__ import annotations

import pytest

from tests.write_path_support import as_caller, capture_operator, make_acta, small_election
from veritally.ingest.app import start_ingest
from veritally.ingest.store import CaptureIntegrityError, IngestStore
from veritally.rpc import aio_channel
from veritally.storage import DbLocation
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

ELECTION = small_election()
CASILLA = "01-01-0001-B1"
Status = ingest_pb2.OutcomeStatus


async def _capture(db: DbLocation, acta: acta_pb2.Acta, operator: str) -> tuple[int, list[bytes]]:
    """Start ingest on ``db``, submit ``acta`` as ``operator``, stop; (outcome status,
    logged leaves)."""
    service = await start_ingest(
        election=ELECTION, db_path=db, address="127.0.0.1:0", double_capture=True
    )
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            response = await stub.SubmitActa(
                ingest_pb2.SubmitActaRequest(acta=acta),
                metadata=as_caller(capture_operator(operator)),
            )
        logged = [leaf for _, _, leaf in service.engine.store.leaves_of(f"{CASILLA}/PRES")]
        return response.outcome.status, logged
    finally:
        await service.stop()


async def test_forged_capture_in_the_store_is_never_logged(store_location: DbLocation) -> None:
    db = store_location
    status, _ = await _capture(db, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5]), "ana")
    assert status == Status.Value("OUTCOME_STATUS_AWAITING_SECOND_CAPTURE")
    forged = make_acta(ELECTION, CASILLA, "PRES", [90, 4, 5])
    store = IngestStore(db)
    with store.database.write():
        store.database.writer.execute(
            "UPDATE captures SET acta = ?", (forged.SerializeToString(deterministic=True),)
        )
    store.close()
    # The honest second operator captures the real figures after a restart.
    with pytest.raises(CaptureIntegrityError):
        await _capture(db, make_acta(ELECTION, CASILLA, "PRES", [3, 4, 5]), "ben")
    store = IngestStore(db)
    assert store.count("log") == 0
    store.close()
