"""veritally-client: verify signed cuts of preliminary election results.

The public API is what ``__all__`` lists; every other module is private.

Quick use::

    from pathlib import Path
    from veritally_client import Client, TlsCredentials, load_trust_root

    root = load_trust_root(Path("trust-root.pb"))
    creds = TlsCredentials.from_files(ca=Path("ca.pem"), cert=Path("me.pem"),
                                      key=Path("me.key"))
    with Client(endpoint="prep.example:443", trust_root=root,
                state_dir=Path("veritally-state"), credentials=creds) as client:
        cut = client.latest()          # verified, or a typed error
        for candidate in cut.race("PRES").candidates:
            print(candidate.name, candidate.affiliation, candidate.votes, candidate.share)
"""

import importlib as _importlib
import typing as _typing

# Names are imported on first use (PEP 562), so that importing the package loads
# neither gRPC nor the client: the command line sets gRPC's logging before gRPC loads
# (veritally_client._main).
if _typing.TYPE_CHECKING:
    from veritally_client._bundle import BundleReport, verify_bundle
    from veritally_client._client import Client, WatchEvent, load_trust_root, verify_evidence
    from veritally_client._config import ClientConfig
    from veritally_client._errors import (
        AfterFinalCutError,
        BadProofError,
        BadSignatureError,
        CredentialsError,
        DigestMismatchError,
        ForkError,
        InsufficientCosignaturesError,
        MalformedDataError,
        RecountMismatchError,
        RehearsalCutError,
        RollbackError,
        StaleCheckpointError,
        StalledError,
        StateDirectoryError,
        StateInUseError,
        StateMismatchError,
        TransportError,
        TrustRootError,
        UnknownIdError,
        UnknownKeyError,
        VerificationError,
        VeritallyError,
    )
    from veritally_client._export import write_csv, write_json
    from veritally_client._export_nist import write_nist
    from veritally_client._export_prep import verified_acta_records, write_prep_files
    from veritally_client._recount import RecountReport
    from veritally_client._transport import GrpcTransport, TlsCredentials, Transport
    from veritally_client._trustroot import TrustedRoot
    from veritally_client._verify import ProvenActa, VerifiedCut
    from veritally_client._view import (
        CandidateResult,
        Completeness,
        OptionResult,
        PartyResult,
        RaceResult,
        Unit,
        UnitResult,
    )

_LAZY: _typing.Final = {
    "AfterFinalCutError": "veritally_client._errors",
    "BadProofError": "veritally_client._errors",
    "BadSignatureError": "veritally_client._errors",
    "CredentialsError": "veritally_client._errors",
    "BundleReport": "veritally_client._bundle",
    "CandidateResult": "veritally_client._view",
    "Client": "veritally_client._client",
    "ClientConfig": "veritally_client._config",
    "Completeness": "veritally_client._view",
    "DigestMismatchError": "veritally_client._errors",
    "ForkError": "veritally_client._errors",
    "InsufficientCosignaturesError": "veritally_client._errors",
    "MalformedDataError": "veritally_client._errors",
    "OptionResult": "veritally_client._view",
    "PartyResult": "veritally_client._view",
    "ProvenActa": "veritally_client._verify",
    "RaceResult": "veritally_client._view",
    "RecountMismatchError": "veritally_client._errors",
    "RecountReport": "veritally_client._recount",
    "RehearsalCutError": "veritally_client._errors",
    "RollbackError": "veritally_client._errors",
    "StaleCheckpointError": "veritally_client._errors",
    "StalledError": "veritally_client._errors",
    "StateDirectoryError": "veritally_client._errors",
    "StateInUseError": "veritally_client._errors",
    "StateMismatchError": "veritally_client._errors",
    "TlsCredentials": "veritally_client._transport",
    "GrpcTransport": "veritally_client._transport",
    "Transport": "veritally_client._transport",
    "TransportError": "veritally_client._errors",
    "TrustRootError": "veritally_client._errors",
    "TrustedRoot": "veritally_client._trustroot",
    "Unit": "veritally_client._view",
    "UnitResult": "veritally_client._view",
    "UnknownIdError": "veritally_client._errors",
    "UnknownKeyError": "veritally_client._errors",
    "VerificationError": "veritally_client._errors",
    "VerifiedCut": "veritally_client._verify",
    "VeritallyError": "veritally_client._errors",
    "WatchEvent": "veritally_client._client",
    "load_trust_root": "veritally_client._client",
    "verified_acta_records": "veritally_client._export_prep",
    "verify_bundle": "veritally_client._bundle",
    "verify_evidence": "veritally_client._client",
    "write_csv": "veritally_client._export",
    "write_json": "veritally_client._export",
    "write_nist": "veritally_client._export_nist",
    "write_prep_files": "veritally_client._export_prep",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "AfterFinalCutError",
    "BadProofError",
    "BadSignatureError",
    "BundleReport",
    "CandidateResult",
    "Client",
    "ClientConfig",
    "Completeness",
    "CredentialsError",
    "DigestMismatchError",
    "ForkError",
    "GrpcTransport",
    "InsufficientCosignaturesError",
    "MalformedDataError",
    "OptionResult",
    "PartyResult",
    "ProvenActa",
    "RaceResult",
    "RecountMismatchError",
    "RecountReport",
    "RehearsalCutError",
    "RollbackError",
    "StaleCheckpointError",
    "StalledError",
    "StateDirectoryError",
    "StateInUseError",
    "StateMismatchError",
    "TlsCredentials",
    "Transport",
    "TransportError",
    "TrustRootError",
    "TrustedRoot",
    "Unit",
    "UnitResult",
    "UnknownIdError",
    "UnknownKeyError",
    "VerificationError",
    "VerifiedCut",
    "VeritallyError",
    "WatchEvent",
    "load_trust_root",
    "verified_acta_records",
    "verify_bundle",
    "verify_evidence",
    "write_csv",
    "write_json",
    "write_nist",
    "write_prep_files",
]

__version__ = "0.1.0"
