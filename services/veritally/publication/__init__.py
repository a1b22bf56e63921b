"""Publication: the transparency log, signed cuts, proofs and the static bundle."""
