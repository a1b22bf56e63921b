"""Publication signs the results summary of every cut once it holds the election
definition (docs/adr/0092-results-summary.md), stores it beside the results and writes it
to the bundle as an immutable file named by its digest, which ``latest`` names; the
recount of the bundle checks every signed summary against the recomputed results."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

from tests.pub_support import make_publisher, publication_config, start_fake_aggregation
from tests.write_path_support import small_election
from veritally.publication.app import start_publication
from veritally_client._bundle import verify_bundle
from veritally_client._trustroot import TrustedRoot
from veritally_client.protocol import parse_cut_leaf, results_summary_bytes, verify_summary
from veritally_client.protocol.pb import log_pb2


async def test_every_cut_signs_its_summary_and_the_bundle_serves_it(tmp_path: Path) -> None:
    election = small_election()
    fake = await start_fake_aggregation(election)
    fake.fake.add_valid(5)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        for n in (7, 0, 11):
            fake.fake.add_valid(n)
            await service.follower.cut_once()
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
    bundle = tmp_path / "bundle"
    latest = json.loads((bundle / "latest").read_bytes())
    cut = log_pb2.SignedCut.FromString((bundle / latest["cut"]).read_bytes())
    record = parse_cut_leaf(cut.cut_leaf)
    assert latest["summary"] == f"results/{record.summary_sha256.hex()}"
    served = (bundle / latest["summary"]).read_bytes()
    summary = verify_summary(served, record=record)
    assert served == results_summary_bytes(cut.results, party_ids=election.party_ids)
    assert summary.acta_records == record.acta_records == 23
    assert len(served) < len(cut.results)
    now = dt.datetime.now(dt.UTC)
    pinned = TrustedRoot.from_bytes(
        (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(), now=now
    )
    report = verify_bundle(bundle, trust_root=pinned, now=now)  # recounts every summary
    assert len(report.cuts) == 4
