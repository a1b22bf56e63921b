"""An independent witness of transparency logs (c2sp.org/tlog-witness).

A witness keeps, per log it is configured for (origin and the log's verifier keys), the
size and root hash of the latest checkpoint it cosigned, and cosigns a new checkpoint
only if a consistency proof shows that it extends that one: two views of one log (a split
view) cannot both get its cosignature. It runs as its own process, with its own key and
its own state directory (``veritally witness serve``); docs/witness.md says how.

The rooms, as for the other services: :mod:`.protocol` (pure: the request format and the
rules, its own refusal codes), :mod:`.store` (the durable state and its lock),
:mod:`.config` (key, witnessed logs), :mod:`.server` (HTTP/1.1, mapping refusals to status
codes). Decisions: docs/adr/0090-witnesses-and-cosignatures.md.
"""
