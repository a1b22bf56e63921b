"""The ingest service: validates actas with PREP's rules, runs double capture, stores
accepted records durably and appends them to the acta log, which it streams in order."""
