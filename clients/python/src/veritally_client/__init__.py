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

from veritally_client._bundle import BundleReport, verify_bundle
from veritally_client._client import Client, load_trust_root, verify_evidence
from veritally_client._config import ClientConfig
from veritally_client._errors import (
    AfterFinalCutError,
    BadProofError,
    BadSignatureError,
    DigestMismatchError,
    ForkError,
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
from veritally_client._transport import TlsCredentials, Transport
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

__all__ = [
    "AfterFinalCutError",
    "BadProofError",
    "BadSignatureError",
    "BundleReport",
    "CandidateResult",
    "Client",
    "ClientConfig",
    "Completeness",
    "DigestMismatchError",
    "ForkError",
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
