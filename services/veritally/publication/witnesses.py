"""Collecting cosignatures: each new checkpoint goes to every configured witness.

After a cut is committed (never before: a witness must never cosign a tree the store
could still roll back, docs/adr/0091), :meth:`WitnessCollector.collect` sends one
c2sp.org/tlog-witness ``add-checkpoint`` request per witness, all at once, each within
its deadline:

1. the old size is the size that witness cosigned last (publication's store keeps it per
   witness; 0 for a new one), with a consistency proof from it, from publication's tree;
2. 200: every returned line must be a cosignature/v1 by that witness's configured key
   over this checkpoint, or nothing of the answer is used;
3. 409: the witness holds another size (its body, ``text/x.tlog.size``): the request is
   sent once more from that size, which the store then keeps;
4. any other 4xx is a refusal: logged loudly as JSON (witness, status, reason) and
   counted; 5xx, timeouts and connection failures count as unreachable. None of them
   delays the cut beyond the deadline or stops it.

The cosignature lines collected are returned in the configured witnesses' order, to be
appended to the stored note.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from veritally.publication.errors import PublicationError
from veritally.witness.protocol import MAX_PROOF_LINES, format_add_checkpoint
from veritally_client import VerificationError
from veritally_client.protocol import CosignatureVerifier

log = logging.getLogger(__name__)

__all__ = ["MAX_ANSWER_BYTES", "WitnessCollector", "WitnessEndpoint"]

#: Largest answer read from a witness: a few cosignature lines (~120 bytes each).
MAX_ANSWER_BYTES = 8192
#: Most cosignature lines taken from one answer (the spec allows one per witness key).
_MAX_LINES = 16
#: Longest refusal reason logged, in characters.
_MAX_REASON = 300


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness publication sends checkpoints to.

    Attributes:
        key: its cosignature/v1 verifier key (what the trust root lists).
        url: its base URL; requests go to ``<url>/add-checkpoint``.
    """

    key: CosignatureVerifier
    url: str

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"witness URL {self.url!r} is not http(s)")


class _RefusedError(PublicationError):
    """A witness's answer other than a cosignature: logged and counted, never raised
    past :meth:`WitnessCollector.collect`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class WitnessCollector:
    """Sends checkpoints to witnesses and returns their verified cosignature lines."""

    def __init__(
        self,
        *,
        witnesses: Sequence[WitnessEndpoint],
        timeout_seconds: float,
        get_size: Callable[[str], Awaitable[int]],
        set_size: Callable[[str, int], Awaitable[None]],
        proof: Callable[[int, int], Awaitable[list[bytes]]],
        observe: Callable[[str, str], None] | None = None,
    ) -> None:
        """Args:
        witnesses: where to send, with the keys their answers must verify under.
        timeout_seconds: each witness's deadline for a whole request (with a retry).
        get_size: the size a witness (by key name) cosigned last, 0 if none.
        set_size: record the size a witness cosigned.
        proof: a consistency proof between two committed sizes of the tree.
        observe: called with (witness name, outcome) for every request's outcome:
            ``cosigned``, ``refused`` or ``unreachable`` (the metrics).

        Raises:
            ValueError: if the timeout is not positive or two witnesses share a key name.
        """
        if timeout_seconds <= 0:
            raise ValueError("the witness timeout must be positive")
        if len({w.key.name for w in witnesses}) != len(witnesses):
            raise ValueError("two witnesses share a key name")
        self.witnesses = tuple(witnesses)
        self._timeout = timeout_seconds
        self._get_size = get_size
        self._set_size = set_size
        self._proof = proof
        self._observe = observe
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds), follow_redirects=False, trust_env=False
        )

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    async def collect(self, note: bytes, *, text: str, size: int) -> list[str]:
        """The verified cosignature lines of ``note`` (checkpoint text ``text``, tree
        ``size``), one witness after another in configuration order; never raises for a
        witness's failure."""
        answers = await asyncio.gather(
            *(self._one(w, note, text=text, size=size) for w in self.witnesses)
        )
        return [line for lines in answers for line in lines]

    async def _one(
        self, witness: WitnessEndpoint, note: bytes, *, text: str, size: int
    ) -> list[str]:
        name = witness.key.name
        try:
            async with asyncio.timeout(self._timeout):
                lines = await self._ask(witness, note, text=text, size=size)
        except _RefusedError as e:
            log.error(
                "ALARM witness refused the checkpoint: %s",
                json.dumps(
                    {
                        "witness": name,
                        "url": witness.url,
                        "tree_size": size,
                        "status": e.status,
                        "reason": e.reason[:_MAX_REASON],
                    }
                ),
            )
            self._count(name, "refused")
            return []
        except (TimeoutError, httpx.HTTPError, OSError) as e:
            log.warning("witness %s unreachable for tree size %d: %r", name, size, e)
            self._count(name, "unreachable")
            return []
        self._count(name, "cosigned")
        return lines

    def _count(self, name: str, outcome: str) -> None:
        if self._observe is not None:
            self._observe(name, outcome)

    async def _ask(
        self, witness: WitnessEndpoint, note: bytes, *, text: str, size: int
    ) -> list[str]:
        name = witness.key.name
        old = await self._get_size(name)
        for attempt in range(2):
            # (1) from what this witness cosigned last
            if old > size:
                raise _RefusedError(409, f"the witness holds size {old}, beyond this tree ({size})")
            proof = await self._proof(old, size) if 0 < old < size else []
            if len(proof) > MAX_PROOF_LINES:
                raise _RefusedError(0, f"a proof of {len(proof)} hashes cannot be sent")
            body = format_add_checkpoint(old, proof, note)
            response = await self._http.post(
                f"{witness.url.rstrip('/')}/add-checkpoint", content=body
            )
            answer = response.content[:MAX_ANSWER_BYTES].decode("utf-8", "replace")
            if response.status_code == 200:
                # (2) every line verifies under the configured key
                lines = self._verified(witness, text, answer)
                await self._set_size(name, size)
                return lines
            if response.status_code == 409 and attempt == 0:
                # (3) the witness says which size it holds; once
                held = answer.strip()
                if not held.isdigit() or len(held) > 20:
                    raise _RefusedError(409, f"a conflict without a size: {held[:40]!r}")
                old = int(held)
                await self._set_size(name, old)
                continue
            if 400 <= response.status_code < 500:
                raise _RefusedError(response.status_code, answer.strip())
            raise httpx.HTTPStatusError(
                f"witness answered {response.status_code}",
                request=response.request,
                response=response,
            )
        raise _RefusedError(409, "the witness changed its size twice")

    @staticmethod
    def _verified(witness: WitnessEndpoint, text: str, answer: str) -> list[str]:
        lines = [line for line in answer.split("\n") if line]
        if not lines or len(lines) > _MAX_LINES:
            raise _RefusedError(200, f"an answer of {len(lines)} lines is not cosignatures")
        try:
            for line in lines:
                witness.key.verify_line(text, line)
        except VerificationError as e:
            raise _RefusedError(200, f"the answer does not verify under its key: {e}") from e
        return [line + "\n" for line in lines]
