"""The CRL lifecycle under a running stack: when the CRL is reissued, when the stack
alarms, and when it refuses to start (Envoy refuses every new connection once the CRL's
nextUpdate has passed; tests/e2e/test_crl_lifecycle.py shows it through a real Envoy).

The decisions are pure (:func:`assess_crl`); the keeper is run against a real PKI
directory with an injected clock, so no test waits for days to pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import time
from pathlib import Path

import pytest
from cryptography import x509

from veritally.pki import CRL_VALIDITY, Pki, crl_next_update, init_pki
from veritally.state import Bootstrap, StateDir
from veritally.supervisor import CrlError, CrlKeeper, CrlSchedule, assess_crl

NOW = dt.datetime(2027, 6, 1, 12, 0, tzinfo=dt.UTC)
SCHEDULE = CrlSchedule()  # 7 days, reissued every 42 h


def _pki(tmp_path: Path) -> Pki:
    return init_pki(tmp_path / "pki", trust_domain="veritally.example", media=2, capture_centres=1)


def _revoked_serials(pki: Pki) -> set[int]:
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    return {r.serial_number for r in crl}


def _at(offset: dt.timedelta) -> dt.datetime:
    return NOW + offset


# --------------------------------------------------------------------------------------
# the pure schedule


def test_default_schedule_reissues_every_quarter_of_a_week() -> None:
    assert SCHEDULE.validity == CRL_VALIDITY == dt.timedelta(days=7)
    assert SCHEDULE.reissue_every == dt.timedelta(hours=42)
    assert SCHEDULE.alarm_below == dt.timedelta(days=3, hours=12)
    assert SCHEDULE.refuse_below == dt.timedelta(hours=42)
    assert SCHEDULE.check_interval_s == 60.0


def test_fresh_crl_is_neither_due_nor_alarming() -> None:
    state = assess_crl(next_update=_at(CRL_VALIDITY), now=NOW, schedule=SCHEDULE)
    assert (state.due, state.alarm, state.refuse) == (False, False, False)
    assert state.left == CRL_VALIDITY


def test_crl_is_due_once_a_period_old() -> None:
    left = CRL_VALIDITY - SCHEDULE.reissue_every
    assert assess_crl(next_update=_at(left), now=NOW, schedule=SCHEDULE).due
    later = left + dt.timedelta(seconds=1)
    assert not assess_crl(next_update=_at(later), now=NOW, schedule=SCHEDULE).due


def test_alarm_after_two_missed_reissues_and_refusal_within_one_period() -> None:
    three_days = assess_crl(next_update=_at(dt.timedelta(days=3)), now=NOW, schedule=SCHEDULE)
    assert (three_days.alarm, three_days.refuse) == (True, False)
    one_day = assess_crl(next_update=_at(dt.timedelta(days=1)), now=NOW, schedule=SCHEDULE)
    assert (one_day.alarm, one_day.refuse) == (True, True)
    expired = assess_crl(next_update=_at(-dt.timedelta(hours=1)), now=NOW, schedule=SCHEDULE)
    assert expired.left < dt.timedelta(0)
    assert (expired.due, expired.alarm, expired.refuse) == (True, True, True)


@pytest.mark.parametrize(("validity_s", "period_s"), [(10, 5), (10, 6), (0, 1), (10, 0), (10, -1)])
def test_schedule_refuses_a_period_that_leaves_no_room_to_alarm(
    validity_s: int, period_s: int
) -> None:
    with pytest.raises(ValueError, match=r"reissue|positive"):
        CrlSchedule(
            validity=dt.timedelta(seconds=validity_s),
            reissue_every=dt.timedelta(seconds=period_s),
        )


def test_assessment_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone"):
        assess_crl(next_update=dt.datetime(2027, 1, 1), now=NOW, schedule=SCHEDULE)


# --------------------------------------------------------------------------------------
# the keeper on a real PKI directory


def test_keeper_reissues_a_due_crl_and_keeps_every_revocation(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    pki.revoke("outlet-01")
    first = crl_next_update(pki.crl)
    # Another process (`veritally pki revoke`) revokes after the keeper was set up.
    Pki.load(pki.root).revoke("cc-01")
    before = pki.crl.read_bytes()
    keeper = CrlKeeper(pki.root, schedule=SCHEDULE, clock=lambda: first - dt.timedelta(days=5))
    state = keeper.check()
    assert keeper.reissued == 1
    assert pki.crl.read_bytes() != before  # signed again (nextUpdate has 1 s precision)
    assert crl_next_update(pki.crl) >= first
    assert not state.alarm
    assert _revoked_serials(pki) == {
        pki.identity("outlet-01").serial,
        pki.identity("cc-01").serial,
    }


def test_keeper_leaves_a_fresh_crl_alone(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    before = pki.crl.read_bytes()
    keeper = CrlKeeper(pki.root, schedule=SCHEDULE)
    assert not keeper.check().due
    assert keeper.reissued == 0
    assert pki.crl.read_bytes() == before


def test_expiring_crl_that_cannot_be_reissued_alarms_with_the_time_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = _pki(tmp_path)
    pki.ca_key.rename(tmp_path / "offline-ca.key")  # the CA key is not on this host
    next_update = crl_next_update(pki.crl)
    keeper = CrlKeeper(
        pki.root, schedule=SCHEDULE, clock=lambda: next_update - dt.timedelta(days=2)
    )
    with caplog.at_level(logging.ERROR, logger="veritally.supervisor"):
        state = keeper.check()
    assert state.alarm
    assert not state.refuse
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "expires in 2 days, 0:00:00" in record.getMessage()
    assert "reissuing it failed" in record.getMessage()


def test_refuses_to_start_on_an_expiring_crl_that_cannot_be_reissued(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    pki.ca_key.rename(tmp_path / "offline-ca.key")
    next_update = crl_next_update(pki.crl)
    keeper = CrlKeeper(
        pki.root, schedule=SCHEDULE, clock=lambda: next_update - dt.timedelta(hours=1)
    )
    with pytest.raises(CrlError, match=r"expires in 1:00:00 and could not be reissued"):
        keeper.check_at_start()


def test_starts_on_an_expired_crl_it_can_reissue(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    pki.reissue_crl(validity=dt.timedelta(seconds=1))
    time.sleep(1.2)  # the CRL on disk is now expired
    keeper = CrlKeeper(pki.root, schedule=SCHEDULE)
    keeper.check_at_start()  # reissued, so nothing to refuse
    assert keeper.reissued == 1
    assert crl_next_update(pki.crl) - dt.datetime.now(dt.UTC) > CRL_VALIDITY - dt.timedelta(
        minutes=1
    )


def test_keeper_thread_reissues_on_its_schedule(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    schedule = CrlSchedule(validity=dt.timedelta(seconds=4), reissue_every=dt.timedelta(seconds=1))
    pki.reissue_crl(validity=schedule.validity)
    keeper = CrlKeeper(pki.root, schedule=schedule)
    keeper.start()
    try:
        deadline = time.monotonic() + 10.0
        while keeper.reissued < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        keeper.stop()
    assert keeper.reissued >= 2
    assert crl_next_update(pki.crl) > dt.datetime.now(dt.UTC)


def test_up_exits_nonzero_on_an_expired_crl_it_cannot_reissue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from veritally.cli.main import main

    state = StateDir(tmp_path / "state")
    Bootstrap(casillas=20, seed=3).ensure(state)
    pki = Pki.load(state.pki)
    pki.reissue_crl(validity=dt.timedelta(seconds=1))
    pki.ca_key.rename(tmp_path / "offline-ca.key")
    time.sleep(1.2)  # the CRL on disk is now expired
    handler = signal.getsignal(signal.SIGINT)
    with caplog.at_level(logging.ERROR):
        code = main(["up", "--state", str(state.root), "--base-port", "0"])
    assert code == 1
    assert signal.getsignal(signal.SIGINT) is handler  # restored after the refusal
    assert any("could not be reissued" in r.getMessage() for r in caplog.records)
    assert not (state.envoy / "envoy.yaml").exists()  # nothing was started


def test_reissue_crl_command_renews_the_crl_and_keeps_revocations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from veritally.cli.main import main

    pki = _pki(tmp_path)
    pki.revoke("outlet-02")
    pki.reissue_crl(validity=dt.timedelta(seconds=1))
    # The command as docs/operations.md shows it (there with --dir state/pki).
    assert main(["pki", "reissue-crl", "--dir", str(pki.root)]) == 0
    assert "nextUpdate" in capsys.readouterr().out
    left = crl_next_update(pki.crl) - dt.datetime.now(dt.UTC)
    assert left > CRL_VALIDITY - dt.timedelta(minutes=1)
    assert _revoked_serials(pki) == {pki.identity("outlet-02").serial}
    assert main(["pki", "reissue-crl", "--dir", str(pki.root), "--validity-hours", "12"]) == 0
    left = crl_next_update(pki.crl) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=11) < left <= dt.timedelta(hours=12)
