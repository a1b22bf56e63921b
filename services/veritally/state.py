"""The state directory of a single-machine deployment, and how to create what is missing.

One directory holds everything ``veritally up`` and ``veritally demo`` need::

    STATE/
      pki/            CA, CRL and every identity (veritally pki init)      keep
      keys/           publisher.key (+ .pub): the checkpoint signing key       keep
      trust-root/     trust-root-v<N>.binpb: what media pin                   keep
      election/       election.yaml, casillas.csv, actas.csv, definition.binpb,
                      params.json (seed and size of a generated election)     keep
      envoy/          envoy.yaml, ca-secret.yaml, publication.binpb, envoy.log,
                      access.log (rendered and validated at every start)
      db/             ingest.sqlite, aggregation.sqlite, publication.sqlite   data
      bundle/         the static bundle publication writes                    data
      logs/           one log file per service process                        data
      media/          the demo's media client state (trusted cut, evidence)   data

"keep" is identity and configuration: created once, reused by every start. "data" is
what a run produces; :meth:`StateDir.wipe_data` removes it for a fresh election night
with the same PKI, keys and trust root.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from veritally.election import load_definition
from veritally.election.generate import generate
from veritally.pki import Pki, init_pki
from veritally.publication.keys import load_signer, write_key_files
from veritally.publication.trustroot import build_body, write_trust_root
from veritally_client.protocol import ElectionIndex, Signer, TrustedRoot, sign_trust_root

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SEED", "TRUST_DOMAIN", "Bootstrap", "StateDir"]

TRUST_DOMAIN = "veritally.example"
# Seed of the synthetic election when none is given: the same seed gives the same files.
DEFAULT_SEED = 2024
# Parties a fresh PKI is issued for: enough centres to capture in parallel and enough
# outlets for a reader, a flooder and a spare in the tests.
DEFAULT_MEDIA = 3
DEFAULT_CAPTURE_CENTRES = 4
DEFAULT_OPERATORS = 2
# Operators per capture centre, each with a certificate: double capture needs two.
DEFAULT_CAPTURE_OPERATORS = 2
# Validity of the trust root created by ``up``/``demo`` (days): long enough for an
# election and its challenges, short enough that a forgotten demo key does not live on.
TRUST_ROOT_DAYS = 90
PUBLISHER_KEY = "publisher.key"

_DATA_DIRS = ("db", "bundle", "logs", "media")
# What a local witness (STATE/witnesses/witness-<i>) wrote during a night (witness.store).
_WITNESS_DATA_DIRS = ("logs", "evidence")


@dataclass(frozen=True)
class StateDir:
    """Paths inside a state directory (whether or not they exist yet).

    Attributes:
        root: the directory.
    """

    root: Path

    @property
    def pki(self) -> Path:
        """The PKI directory (``veritally pki init --dir``)."""
        return self.root / "pki"

    @property
    def keys(self) -> Path:
        """The publisher's signing keys."""
        return self.root / "keys"

    @property
    def publisher_key(self) -> Path:
        """The checkpoint signing key (private, mode 0600)."""
        return self.keys / PUBLISHER_KEY

    @property
    def trust_root(self) -> Path:
        """The trust root directory (``trust-root-v<N>.binpb``)."""
        return self.root / "trust-root"

    @property
    def trust_root_v1(self) -> Path:
        """The first trust root: the file media pin out of band."""
        return self.trust_root / "trust-root-v1.binpb"

    @property
    def election(self) -> Path:
        """The election's files."""
        return self.root / "election"

    @property
    def election_yaml(self) -> Path:
        """The election definition."""
        return self.election / "election.yaml"

    @property
    def actas_csv(self) -> Path:
        """The actas of the synthetic election, in arrival order."""
        return self.election / "actas.csv"

    @property
    def election_params(self) -> Path:
        """``{"casillas": N, "seed": S}`` of a generated election (absent for others)."""
        return self.election / "params.json"

    @property
    def definition_bytes(self) -> Path:
        """The serialized ElectionDefinition the services load (faster than the YAML and
        CSV, and byte-identical for every service)."""
        return self.election / "definition.binpb"

    @property
    def envoy(self) -> Path:
        """Envoy's rendered configuration and logs."""
        return self.root / "envoy"

    @property
    def prometheus(self) -> Path:
        """Prometheus' scrape configuration and alerting rules (rendered at start)."""
        return self.root / "prometheus"

    @property
    def db(self) -> Path:
        """The services' SQLite stores."""
        return self.root / "db"

    @property
    def bundle(self) -> Path:
        """The static bundle."""
        return self.root / "bundle"

    @property
    def logs(self) -> Path:
        """One log file per service."""
        return self.root / "logs"

    @property
    def media(self) -> Path:
        """The demo media client's trusted state."""
        return self.root / "media"

    @property
    def witnesses(self) -> Path:
        """The local witnesses' state directories (``witness-<i>``, ``veritally up
        --witnesses``)."""
        return self.root / "witnesses"

    def store(self, service: str) -> Path:
        """The SQLite file of ``service``."""
        return self.db / f"{service}.sqlite"

    def wipe_data(self) -> None:
        """Remove what a run produced (stores, bundle, logs, client state, the local
        witnesses' records and evidence), keeping the PKI, keys, trust root, election,
        the witnesses' keys and Envoy configuration."""
        for name in _DATA_DIRS:
            shutil.rmtree(self.root / name, ignore_errors=True)
        # The local witnesses keep their keys; what they cosigned was this log's, and a
        # fresh log under the same key and origin would be a fork to them.
        for witness in self.witnesses.glob("witness-*"):
            for name in _WITNESS_DATA_DIRS:
                shutil.rmtree(witness / name, ignore_errors=True)


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """What to create when it is missing.

    Attributes:
        casillas: casillas of the synthetic election.
        seed: its random seed.
        media: media outlets in a new PKI.
        capture_centres: capture centres in a new PKI.
        operators: operators in a new PKI (dual control of corrections needs two).
        capture_operators: operators per capture centre (``cc-01/op-1``...); an
            existing PKI gets the missing ones.
        test: whether the synthetic election is a rehearsal (its cuts are test data).
    """

    casillas: int
    seed: int = DEFAULT_SEED
    media: int = DEFAULT_MEDIA
    capture_centres: int = DEFAULT_CAPTURE_CENTRES
    operators: int = DEFAULT_OPERATORS
    capture_operators: int = DEFAULT_CAPTURE_OPERATORS
    test: bool = False

    def election_params(self) -> dict[str, int]:
        """What a generated election depends on (``params.json``)."""
        params = {
            "casillas": self.casillas,
            "seed": self.seed,
            "capture_centres": self.capture_centres,
        }
        if self.test:  # absent for a real night, so that existing params still match
            params["test"] = 1
        return params

    def ensure(self, state: StateDir) -> list[str]:
        """Create whatever is missing in ``state``: PKI, publisher key, trust root v1,
        synthetic election and its serialized definition. Never overwrites.

        Returns:
            One line per thing created (empty when everything existed).

        Raises:
            veritally.pki.PkiError: an existing PKI is inconsistent.
            OSError: files cannot be written.
        """

        created: list[str] = []
        state.root.mkdir(parents=True, exist_ok=True)
        if not (state.pki / "manifest.json").exists():
            init_pki(
                state.pki,
                trust_domain=TRUST_DOMAIN,
                media=self.media,
                capture_centres=self.capture_centres,
                operators=self.operators,
                capture_operators=self.capture_operators,
            )
            created.append(
                f"PKI {state.pki} (trust domain {TRUST_DOMAIN}: {self.media} outlets, "
                f"{self.capture_centres} capture centres, {self.operators} operators)"
            )
        else:
            pki = Pki.load(state.pki)  # fail early on a broken PKI
            # A PKI made before capture operators had certificates gets them now.
            names = {i.name for i in pki.identities()}
            for centre in [i.name for i in pki.identities("capture") if "/" not in i.name]:
                for j in range(1, self.capture_operators + 1):
                    if f"{centre}/op-{j}" not in names:
                        pki.issue_capture_operator(centre=centre, operator=f"op-{j}")
                        created.append(f"capture operator certificate {centre}/op-{j}")

        if not state.election_yaml.exists():
            # The national default takes tens of seconds: say so before, not only after.
            log.info(
                "generating a synthetic election of %s casillas (seed %d)...",
                f"{self.casillas:,}",
                self.seed,
            )
            result = generate(
                seed=self.seed,
                casillas=self.casillas,
                out_dir=state.election,
                capture_centres=self.capture_centres,
                test=self.test,
            )
            state.definition_bytes.unlink(missing_ok=True)
            state.election_params.write_text(json.dumps(self.election_params()) + "\n")
            created.append(
                f"election {state.election} ({len(result.definition.casillas):,} casillas, "
                f"{result.actas_written:,} actas, seed {self.seed})"
            )
        if not state.definition_bytes.exists():
            index = load_definition(state.election_yaml)
            tmp = state.definition_bytes.with_suffix(".tmp")
            tmp.write_bytes(index.definition_bytes)
            tmp.replace(state.definition_bytes)

        origin = self.origin(state)
        if not state.publisher_key.exists():
            state.keys.mkdir(parents=True, exist_ok=True)
            write_key_files(Signer.generate(origin), state.publisher_key, passphrase=None)
            created.append(f"publisher key {state.publisher_key} (name {origin})")
        if not any(state.trust_root.glob("trust-root-v*.binpb")):
            self._create_trust_root(state, origin)
            created.append(f"trust root {state.trust_root_v1} (expires in {TRUST_ROOT_DAYS} d)")
        return created

    @staticmethod
    def origin(state: StateDir) -> str:
        """The checkpoint origin: ``<trust domain>/<election id>``."""

        election_id = ElectionIndex.from_bytes(state.definition_bytes.read_bytes()).election_id
        return f"{TRUST_DOMAIN}/{election_id}"

    @staticmethod
    def _create_trust_root(state: StateDir, origin: str) -> None:

        signer = load_signer(state.publisher_key, passphrase=None)
        now = dt.datetime.now(dt.UTC)
        body = build_body(
            version=1,
            origin=origin,
            publishers=[signer],
            threshold=1,
            expires=now + dt.timedelta(days=TRUST_ROOT_DAYS),
        )
        data = sign_trust_root(body, [signer])
        TrustedRoot.from_bytes(data, now=now)  # never write what clients would reject
        state.trust_root.mkdir(parents=True, exist_ok=True)
        write_trust_root(state.trust_root, 1, data)
