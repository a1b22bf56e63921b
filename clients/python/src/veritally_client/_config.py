"""The client's safety limits, in one frozen place.

Every limit says its unit and why it has the value it has. A newsroom changes them by
building a new :class:`ClientConfig` (``dataclasses.replace``); a running client never
changes them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientConfig"]


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Safety limits of a verifying client.

    Attributes:
        max_checkpoint_age: seconds. A cut whose cut_time is older than this is rejected
            as stale. The publisher makes a heartbeat cut every interval (seconds to
            minutes) even when nothing changed, so a view older than this is frozen.
        max_stall_seconds: seconds. Longest span, by the signed cut times, during which
            cuts may say that ingest accepted records they do not cover (``lag_records``
            above zero) while no cut covers a new one; past it ``latest`` and ``watch``
            raise StalledError. A working pipeline covers a new record within a cut
            interval or two (seconds); five minutes with none while records wait is a
            record that aggregation or publication cannot get past.
        max_clock_skew: seconds. How far in the future (by this machine's clock) a cut
            time may be before it is rejected; covers ordinary NTP drift only.
        max_message_bytes: bytes. Largest gRPC message accepted. A national results blob
            is a few hundred KiB and leaf pages are capped below this.
        max_results_bytes: bytes. Largest results blob hashed and parsed; checked before
            hashing so that a hostile server cannot make the client parse gigabytes.
        max_leaves_per_page: leaves. Page size asked for in a recount; the server may
            return fewer. Bounds memory per page (leaves are ~200-400 bytes each).
        rpc_timeout: seconds. Deadline of every unary call.
        watch_backoff_initial: seconds. First wait before reconnecting a broken stream.
        watch_backoff_max: seconds. Longest wait between reconnection attempts; the
            backoff doubles up to this.
        watch_max_failures: attempts. Consecutive failed reconnections after which
            ``watch`` gives up and raises the last TransportError (0 means never).
        allow_test: accept cuts of a rehearsal (results signed with ``test`` set). Off by
            default, so that a simulacro's figures are never shown as the election's;
            every view of an accepted test cut says it is a test.
    """

    max_checkpoint_age: float = 15 * 60.0
    max_stall_seconds: float = 5 * 60.0
    max_clock_skew: float = 60.0
    max_message_bytes: int = 64 * 1024 * 1024
    max_results_bytes: int = 32 * 1024 * 1024
    max_leaves_per_page: int = 10_000
    rpc_timeout: float = 30.0
    watch_backoff_initial: float = 0.5
    watch_backoff_max: float = 30.0
    watch_max_failures: int = 0
    allow_test: bool = False

    def __post_init__(self) -> None:
        # Caller bugs raise built-ins (a config with a zero limit would disable a check).
        for name in (
            "max_checkpoint_age",
            "max_stall_seconds",
            "max_message_bytes",
            "max_results_bytes",
            "max_leaves_per_page",
            "rpc_timeout",
            "watch_backoff_initial",
            "watch_backoff_max",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ClientConfig.{name} must be positive")
        if self.max_clock_skew < 0:
            raise ValueError("ClientConfig.max_clock_skew must not be negative")
        if self.watch_backoff_max < self.watch_backoff_initial:
            raise ValueError("ClientConfig.watch_backoff_max is below watch_backoff_initial")
        if self.watch_max_failures < 0:
            raise ValueError("ClientConfig.watch_max_failures must not be negative")
