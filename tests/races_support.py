"""A small federal-shaped election for tests of races, candidates and coalitions.

A presidency (one national race, coalition candidates), a senate held per state (a
coalition in one state only), deputies per district (an independent in one district, no
race in the third district), special casillas that receive no deputies' acta.
"""

from __future__ import annotations

from veritally_client._gen.veritally.v1 import election_pb2, results_pb2

__all__ = ["federal_pb"]

B = election_pb2.CASILLA_TYPE_BASICA
S = election_pb2.CASILLA_TYPE_ESPECIAL
STATE = results_pb2.LEVEL_STATE
DISTRICT = results_pb2.LEVEL_DISTRICT


def federal_pb() -> election_pb2.ElectionDefinition:
    """2 states, 3 districts, 6 casillas (one special), 3 contests, 6 races."""
    pb = election_pb2.ElectionDefinition(id="mx-mini", name="Mini federal")
    for p in ("PAN", "PRI", "MORENA", "PT", "MC"):
        pb.parties.add(id=p, name=p, abbreviation=p)
    pb.coalitions.add(id="FCM", name="Fuerza y Corazón", party_ids=["PAN", "PRI"])
    pb.coalitions.add(id="SHH", name="Sigamos", party_ids=["MORENA", "PT"])
    combos = [
        ("PAN", ["PAN"]),
        ("PRI", ["PRI"]),
        ("MORENA", ["MORENA"]),
        ("PT", ["PT"]),
        ("MC", ["MC"]),
        ("PAN_PRI", ["PAN", "PRI"]),
        ("MORENA_PT", ["MORENA", "PT"]),
    ]
    pres = pb.contests.add(id="PRES", name="Presidencia")
    for oid, parties in combos:
        pres.options.add(id=oid, name=oid, party_ids=parties)
    sen = pb.contests.add(id="SEN", name="Senado", scope=STATE)
    for oid, parties in combos:
        sen.options.add(id=oid, name=oid, party_ids=parties)
    dip = pb.contests.add(id="DIP", name="Diputaciones", scope=DISTRICT)
    for oid, parties in [*combos, ("CI_01", [])]:
        dip.options.add(id=oid, name=oid, party_ids=parties)
    pb.races.add(
        id="PRES",
        contest_id="PRES",
        candidates=[
            election_pb2.Candidate(id="x", name="Xóchitl", coalition_id="FCM"),
            election_pb2.Candidate(id="c", name="Claudia", coalition_id="SHH"),
            election_pb2.Candidate(id="j", name="Jorge", party_id="MC"),
        ],
    )
    # State 01: both coalitions. State 02: PAN and PRI run apart.
    pb.races.add(
        id="SEN-01",
        contest_id="SEN",
        unit_id="01",
        candidates=[
            election_pb2.Candidate(id="a", name="A", coalition_id="FCM"),
            election_pb2.Candidate(id="b", name="B", coalition_id="SHH"),
            election_pb2.Candidate(id="m", name="M", party_id="MC"),
        ],
    )
    pb.races.add(
        id="SEN-02",
        contest_id="SEN",
        unit_id="02",
        option_ids=["PAN", "PRI", "MORENA", "PT", "MC", "MORENA_PT"],
        candidates=[
            election_pb2.Candidate(id="p", name="P", party_id="PAN"),
            election_pb2.Candidate(id="r", name="R", party_id="PRI"),
            election_pb2.Candidate(id="b", name="B2", coalition_id="SHH"),
            election_pb2.Candidate(id="m", name="M2", party_id="MC"),
        ],
    )
    pb.races.add(
        id="DIP-01-01",
        contest_id="DIP",
        unit_id="01-01",
        option_ids=["PAN", "PRI", "MORENA", "PT", "MC", "PAN_PRI", "MORENA_PT", "CI_01"],
        candidates=[
            election_pb2.Candidate(id="d1", name="D1", coalition_id="FCM"),
            election_pb2.Candidate(id="d2", name="D2", coalition_id="SHH"),
            election_pb2.Candidate(id="d3", name="D3", party_id="MC"),
            election_pb2.Candidate(id="d4", name="Indie", independent_option_id="CI_01"),
        ],
    )
    pb.races.add(
        id="DIP-01-02",
        contest_id="DIP",
        unit_id="01-02",
        option_ids=["PAN", "PRI", "MORENA", "PT", "MC", "PAN_PRI", "MORENA_PT"],
    )
    # District 02-01 has no deputies' race in this definition: its casillas have no
    # deputies' acta (as a contest held in part of a country).
    pb.ballots.add(type=S, contest_ids=["PRES", "SEN"])
    pb.states.add(id="01", name="Uno")
    pb.states.add(id="02", name="Dos")
    pb.districts.add(id="01-01", state_id="01", name="d1")
    pb.districts.add(id="01-02", state_id="01", name="d2")
    pb.districts.add(id="02-01", state_id="02", name="d3")
    for sid, did in (("01-0001", "01-01"), ("01-0002", "01-02"), ("02-0001", "02-01")):
        pb.sections.add(id=sid, district_id=did)
    for cid, sid, ctype, nominal, limit in (
        ("01-0001-B", "01-0001", B, 500, 0),
        ("01-0001-C1", "01-0001", election_pb2.CASILLA_TYPE_CONTIGUA, 480, 0),
        ("01-0001-S1", "01-0001", S, 0, 750),
        ("01-0002-B", "01-0002", B, 300, 0),
        ("02-0001-B", "02-0001", B, 700, 0),
        ("02-0001-E1", "02-0001", election_pb2.CASILLA_TYPE_EXTRAORDINARIA, 250, 0),
    ):
        pb.casillas.add(
            id=cid, section_id=sid, type=ctype, nominal_list=nominal, ballot_limit=limit
        )
    return pb
