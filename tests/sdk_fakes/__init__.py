"""Support for the SDK's integration tests: the REAL publication service on a real
socket, following a real grpc.aio aggregation server whose results are computed by the
SDK's Tally over a small real election (so that the client can recount them)."""
