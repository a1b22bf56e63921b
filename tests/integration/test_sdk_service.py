"""The SDK against the REAL publication service on a real socket (plaintext and mTLS).

The sync client runs in a worker thread (asyncio.to_thread) because the grpc.aio servers
share the test's event loop.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.sdk_fakes.stack import SdkStack, sdk_stack
from veritally_client import (
    Client,
    ClientConfig,
    StaleCheckpointError,
    TransportError,
    VerifiedCut,
    load_trust_root,
    verify_bundle,
)
from veritally_client._cli import (
    EXIT_NOTHING_NEW,
    EXIT_OK,
    EXIT_TRANSPORT,
    EXIT_UNKNOWN_ID,
    EXIT_USAGE,
    main,
)


async def test_latest_verifies_real_cuts_and_advances(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        with stack.client() as client:
            first = await asyncio.to_thread(client.latest)
            await stack.cut(5)
            second = await asyncio.to_thread(client.latest)
            assert second.cut_number > first.cut_number
            assert second.acta_records == first.acta_records + 5
            state = client.trusted_state
            assert state is not None
            assert (state.cut_number, state.root_hash) == (second.cut_number, second.root_hash)
            past = await asyncio.to_thread(client.cut, first.cut_number)
            assert past.root_hash == first.root_hash


async def test_latest_over_mutual_tls(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path, tls=True) as stack:
        with stack.client() as client:
            cut = await asyncio.to_thread(client.latest)
            assert cut.national().contests[0].contest_id == "PRES"


async def test_plaintext_client_cannot_talk_to_a_tls_server(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path, tls=True) as stack:
        config = ClientConfig(rpc_timeout=2.0)
        with Client(
            endpoint=stack.endpoint,
            trust_root=load_trust_root(stack.trust_root_file),
            state_dir=stack.state_dir,
            unsafe_plaintext=True,
            config=config,
        ) as client:
            with pytest.raises(TransportError):
                await asyncio.to_thread(client.latest)
            assert client.trusted_state is None


async def test_unknown_cut_is_a_transport_error(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        with stack.client() as client:
            await asyncio.to_thread(client.latest)
            with pytest.raises(TransportError):
                await asyncio.to_thread(client.cut, 999)


async def test_proves_real_acta_and_correction(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        aid = stack.aggregation.add(2)[0]
        stack.aggregation.correct_acta(aid)
        await stack.cut()
        with stack.client() as client:
            proven = await asyncio.to_thread(client.prove_acta, aid)
            first = await asyncio.to_thread(lambda: client.prove_acta(aid, revision=1))
        assert (proven.record.revision, first.record.revision) == (2, 1)
        assert proven.record.acta_id == aid


async def test_recount_of_the_real_log_matches_every_signed_cut(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        for n in (3, 0, 4):  # a heartbeat cut in the middle
            await stack.cut(n)
        config = ClientConfig(max_leaves_per_page=4)  # several pages
        with stack.client(config) as client:
            latest = await asyncio.to_thread(client.latest)
            report = await asyncio.to_thread(client.recount)
        assert report.tree_size == latest.tree_size
        assert [c.cut_number for c in report.cuts] == list(range(1, latest.cut_number + 1))
        assert report.unit("national") == latest.national()
        assert report.unit("casilla", "01-01-0001-B1").contests


async def test_watch_follows_the_real_stream(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        seen: list[VerifiedCut] = []
        two = threading.Event()

        def follow() -> None:
            with stack.client(ClientConfig(watch_backoff_initial=0.05)) as client:
                for cut in client.watch():
                    seen.append(cut)
                    if len(seen) == 3:
                        two.set()
                        return

        worker = asyncio.create_task(asyncio.to_thread(follow))
        for _ in range(100):  # bounded: at most 100 cuts, 10 s
            if two.is_set():
                break
            await stack.cut(1)
            await asyncio.sleep(0.1)
        await asyncio.wait_for(worker, 10)
        numbers = [c.cut_number for c in seen]
        assert numbers == sorted(set(numbers))
        assert len(numbers) == 3


async def test_real_bundle_verifies_offline(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        await stack.cut(4)
        await stack.cut(2)
        newest = stack.service.engine.latest_number
    root = load_trust_root(stack.trust_root_file)
    report = await asyncio.to_thread(verify_bundle, stack.bundle_dir, trust_root=root)
    assert report.latest.cut_number == newest
    assert len(report.recount.cuts) == newest


def _cli(stack: SdkStack, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    base = [
        "--endpoint",
        stack.endpoint,
        "--unsafe-plaintext",
        "--trust-root",
        str(stack.trust_root_file),
        "--state-dir",
        str(stack.state_dir),
    ]
    with redirect_stdout(out):
        code = main([*base, *args])
    return code, out.getvalue()


async def test_cli_against_the_real_service(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        code, out = await asyncio.to_thread(_cli, stack, "latest")
        assert code == EXIT_OK
        assert "PRES" in out
        code, _ = await asyncio.to_thread(_cli, stack, "latest", "--if-newer")
        assert code == EXIT_NOTHING_NEW
        await stack.cut(2)
        code, _ = await asyncio.to_thread(_cli, stack, "latest", "--if-newer")
        assert code == EXIT_OK
        code, out = await asyncio.to_thread(_cli, stack, "export", "--format", "csv")
        assert code == EXIT_OK
        rows = list(csv.DictReader(io.StringIO(out)))
        assert {r["level"] for r in rows} == {"national", "state", "district"}
        code, out = await asyncio.to_thread(
            _cli, stack, "export", "--format", "json", "--all-levels"
        )
        assert code == EXIT_OK
        levels = {u["level"] for u in json.loads(out)["units"]}
        assert levels == {"national", "state", "district", "section", "casilla"}
        aid = "01-01-0001-B1/PRES"  # the first acta the test election captures
        code, out = await asyncio.to_thread(_cli, stack, "proof", aid)
        assert code == EXIT_OK
        assert json.loads(out)["acta_id"] == aid
        code, out = await asyncio.to_thread(_cli, stack, "audit", "--quiet")
        assert code == EXIT_OK
        assert json.loads(out)["cuts_checked"] == stack.service.engine.latest_number
        code, out = await asyncio.to_thread(_cli, stack, "watch", "--plain", "--max-cuts", "1")
        assert code == EXIT_OK
        assert json.loads(out.splitlines()[0])["cut"]["cut_number"] >= 1
    code, _ = await asyncio.to_thread(_cli, stack, "latest")
    assert code == EXIT_TRANSPORT


async def test_watch_reports_a_frozen_publisher_as_stale(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        # No cut is made after the first: the stream goes silent, the client drops it
        # after max_checkpoint_age and finds the newest cut too old.
        config = ClientConfig(max_checkpoint_age=1.0, watch_backoff_initial=0.05)

        def follow() -> list[int]:
            seen: list[int] = []
            with stack.client(config) as client:
                for cut in client.watch():
                    seen.append(cut.cut_number)
            return seen

        with pytest.raises(StaleCheckpointError):
            await asyncio.wait_for(asyncio.to_thread(follow), 10)


def _cli_err(stack: SdkStack, *args: str) -> tuple[int, str, str]:
    err = io.StringIO()
    with redirect_stderr(err):
        code, text = _cli(stack, *args)
    return code, text, err.getvalue()


async def test_audit_verifies_and_recounts_the_newest_cut_and_names_it(tmp_path: Path) -> None:
    """Audit used to recount the last cut the state had verified (maybe hours old) and
    not say which; --quiet still printed its summary."""
    async with sdk_stack(tmp_path) as stack:
        code, _ = await asyncio.to_thread(_cli, stack, "latest")
        assert code == EXIT_OK
        await stack.cut(3)  # a newer cut than the state holds
        newest = stack.service.engine.latest_number
        code, out, err = await asyncio.to_thread(_cli_err, stack, "audit")
        assert code == EXIT_OK
        report = json.loads(out)
        assert report["cut_number"] == newest
        assert report["cuts"][-1]["cut_number"] == newest
        assert f"recounted cut {newest} (tree size {report['tree_size']}, " in err
        code, out, err = await asyncio.to_thread(_cli_err, stack, "audit", "--quiet")
        assert code == EXIT_OK
        assert json.loads(out)["cut_number"] == newest
        assert err == ""


async def test_cli_into_a_closed_pipe_exits_0_quietly(tmp_path: Path) -> None:
    """`veritally-client export ... | head -c 100`: the reader goes away mid-output."""
    async with sdk_stack(tmp_path) as stack:
        base = (
            f"{Path(sys.executable).parent / 'veritally-client'} "
            f"--endpoint {stack.endpoint} --unsafe-plaintext "
            f"--trust-root {stack.trust_root_file} --state-dir {stack.state_dir} "
            "export --format csv --all-levels"
        )
        whole = await asyncio.create_subprocess_shell(
            base, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        full, _ = await whole.communicate()
        assert whole.returncode == 0
        assert len(full) > 1 << 16  # more than a pipe holds (64 KiB), so the writer meets EPIPE
        cut = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            f"set -o pipefail; {base} | head -c 100 >/dev/null",
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await cut.communicate()
        assert cut.returncode == 0
        assert err == b""


async def test_close_from_another_thread_ends_watch_and_later_calls_are_transport_errors(
    tmp_path: Path,
) -> None:
    """close() during watch() used to surface grpc's bare ValueError ("Cannot invoke RPC
    on closed channel!") out of the watch loop."""
    async with sdk_stack(tmp_path) as stack:
        client = stack.client()
        first = threading.Event()
        outcome: list[object] = []

        def follow() -> None:
            try:
                for cut in client.watch():
                    outcome.append(cut.cut_number)
                    first.set()
                outcome.append("ended")
            except BaseException as e:
                outcome.append(e)
                first.set()

        watcher = threading.Thread(target=follow)
        watcher.start()
        assert await asyncio.to_thread(first.wait, 10)
        await asyncio.sleep(0.2)  # the watch is now waiting on the server stream
        await asyncio.to_thread(client.close)
        await asyncio.to_thread(watcher.join, 10)
        assert not watcher.is_alive()
        assert outcome[-1] == "ended", outcome
        with pytest.raises(TransportError, match="the client was closed"):
            await asyncio.to_thread(client.latest)


def _doc_block(after: str) -> str:
    """The first ```python block of docs/sdk.md after the heading ``after``."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "sdk.md").read_text()
    section = text[text.index(after) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


async def test_asyncio_example_of_docs_follows_cuts_and_stops_on_cancel(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(_doc_block("## Threads and asyncio"), namespace)  # noqa: S102 - the docs' own code
    follow_cuts = namespace["follow_cuts"]
    async with sdk_stack(tmp_path) as stack:
        client = stack.client()
        cuts: asyncio.Queue[VerifiedCut] = asyncio.Queue()
        task = asyncio.create_task(follow_cuts(client, cuts))  # type: ignore[operator]
        first = await asyncio.wait_for(cuts.get(), 10)
        await stack.cut(2)
        second = await asyncio.wait_for(cuts.get(), 10)
        assert second.cut_number == first.cut_number + 1
        assert second.acta_records == first.acta_records + 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(TransportError, match="the client was closed"):
            await asyncio.to_thread(client.latest)


async def test_docs_poll_example_tells_new_results_from_a_heartbeat(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(_doc_block("## Conditional reads"), namespace)  # noqa: S102 - the docs' own code
    poll = namespace["poll"]
    out = io.StringIO()
    async with sdk_stack(tmp_path) as stack:
        with stack.client() as client, redirect_stdout(out):
            first: VerifiedCut = await asyncio.to_thread(poll, client)  # type: ignore[arg-type]
            await stack.cut()
            await asyncio.to_thread(poll, client)  # type: ignore[arg-type]
    n = first.cut_number
    assert out.getvalue().splitlines() == [
        f"cut {n}: new results, {first.acta_records} acta records",
        f"cut {n + 1}: the same results, signed again",
    ]


async def test_proof_of_an_acta_id_the_election_lacks_is_an_unknown_id_not_a_transport_error(
    tmp_path: Path,
) -> None:
    """An acta id the definition does not have used to go to the server and come back as
    NOT_FOUND, a transport failure (exit 3)."""
    async with sdk_stack(tmp_path) as stack:
        for acta, said in (
            ("99-99-0001-B1/PRES", "no casilla '99-99-0001-B1' (valid casilla ids: '01-01-"),
            ("01-01-0001-B1/GOV", "no contest 'GOV' (valid contest ids: 'PRES'"),
        ):
            code, out, err = await asyncio.to_thread(_cli_err, stack, "proof", acta)
            assert code == EXIT_UNKNOWN_ID, err
            assert out == ""
            assert said in err
        code, _, err = await asyncio.to_thread(_cli_err, stack, "proof", "no-separator")
        assert code == EXIT_USAGE
        assert "is not of the form <casilla>/<contest>" in err
