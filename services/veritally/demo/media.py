"""A media outlet following every cut through the edge with the SDK, verifying each."""

from __future__ import annotations

import threading
from pathlib import Path

from veritally.stack import Stack
from veritally_client import (
    Client,
    ClientConfig,
    TlsCredentials,
    VerifiedCut,
    load_trust_root,
)

__all__ = ["MEDIA_MAX_AGE_S", "MediaWatcher"]

# The media client's freshness bound (seconds): several missed cuts at the default
# interval is already alarming, but a restarted publication must be able to catch up.
MEDIA_MAX_AGE_S = 120.0


class MediaWatcher(threading.Thread):
    """A media outlet following every cut through the edge with the SDK, verifying each.

    Stops after a cut covering ``target`` acta records once :meth:`finish` has been
    called, or at :meth:`abort`. The first verification error stops it and is kept in
    ``error``.
    """

    def __init__(
        self, stack: Stack, *, outlet: str, state_dir: Path, pin: Path | None = None
    ) -> None:
        """Describe the watcher; :meth:`start` runs it.

        Raises:
            veritally.pki.PkiError: no such outlet.
            veritally_client.TrustRootError: the pinned trust root is invalid.
        """
        super().__init__(name=f"media-{outlet}", daemon=True)
        tls = stack.tls(outlet)
        self.credentials = TlsCredentials.from_files(ca=tls.ca, cert=tls.cert, key=tls.key)
        # Media pin a trust root out of band (the first, or with local witnesses the
        # newest, see Stack.pinned_trust_root); ``pin`` names another file.
        self.trust_root = load_trust_root(pin or stack.pinned_trust_root())
        self.endpoint = stack.endpoints.edge
        self.state_dir = state_dir
        self.config = ClientConfig(max_checkpoint_age=MEDIA_MAX_AGE_S, watch_backoff_max=2.0)
        self.latest: VerifiedCut | None = None
        self.verified = 0
        self.error: BaseException | None = None
        self.target: int | None = None
        self._abort = threading.Event()
        self.done = threading.Event()

    def client(self) -> Client:
        """A new SDK client with the watcher's identity, trust root and state."""
        return Client(
            endpoint=self.endpoint,
            trust_root=self.trust_root,
            state_dir=self.state_dir,
            credentials=self.credentials,
            config=self.config,
        )

    def finish(self, target: int) -> None:
        """Stop after a verified cut covering ``target`` acta records."""
        self.target = target

    def abort(self) -> None:
        """Stop at the next cut."""
        self._abort.set()

    def run(self) -> None:
        try:
            with self.client() as client:
                for cut in client.watch():
                    self.latest = cut
                    self.verified += 1
                    if self._abort.is_set():
                        return
                    if self.target is not None and cut.acta_records >= self.target:
                        return
        except Exception as e:  # any failure must reach the main thread, which reports it
            self.error = e
        finally:
            self.done.set()
