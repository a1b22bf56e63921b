"""The aggregation service: follows ingest's acta log from a persisted cursor, keeps the
totals of every unit (through the SDK's ``Tally``) and serves them and the records it
counted to publication."""
