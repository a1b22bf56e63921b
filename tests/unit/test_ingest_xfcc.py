"""The submitting identity recorded from Envoy's x-forwarded-client-cert header."""

from __future__ import annotations

from veritally.rpc.peer import submitter_from_xfcc


def test_takes_the_uri_of_the_nearest_client() -> None:
    header = (
        "By=spiffe://t/edge;Hash=aa;URI=spiffe://t/capture/far,"
        'By=spiffe://t/ingest;Hash=bb;Subject="CN=x";URI=spiffe://t/capture/near'
    )
    assert submitter_from_xfcc(header) == "spiffe://t/capture/near"


def test_no_header_or_no_uri_records_nothing() -> None:
    assert submitter_from_xfcc(None) == ""
    assert submitter_from_xfcc("") == ""
    assert submitter_from_xfcc("Hash=aa;DNS=capture.example") == ""
