"""Key rotation through Serf's internal queries on the virtual clock (encrypted cluster)."""

from __future__ import annotations

import base64
import json
import os

from registry.serf import messages as M
from registry.serf.keyring import (
    KEY_QUERIES,
    KeyOpResult,
    aggregate_key_responses,
    decode_key,
)
from registry.serf.member import MemberStatus
from registry.serf.query import QueryHandle
from tests.serf.serf_sim import SerfCluster, make_cluster

K1 = base64.b64encode(bytes(range(16))).decode()
K2 = base64.b64encode(bytes(range(100, 132))).decode()


def run_key_op(
    c: SerfCluster, op: str, key: str | None
) -> tuple[QueryHandle, KeyOpResult]:
    payload = M.encode_key_request(decode_key(key) if key else b"")
    h = c.nodes[0].query(KEY_QUERIES[op], payload, c.net.now)
    c.net.kick()
    assert c.run_until(lambda: h.closed, 20.0)
    return h, aggregate_key_responses(h.responses, len(c.nodes))


def test_rotate_key_across_cluster_without_failures(tmp_path: object) -> None:
    files = [os.path.join(str(tmp_path), f"kr{i}.json") for i in range(3)]
    c = SerfCluster.__new__(SerfCluster)
    c = make_cluster(3, encrypt_key=K1)
    for i, s in enumerate(c.nodes):
        s.keyring_file = files[i]
    _, res = run_key_op(c, "list", None)
    assert res.ok and res.keys == {K1: 3} and res.primary_keys == {K1: 3}
    _, res = run_key_op(c, "install", K2)
    assert res.ok and res.num_resp == 3
    _, res = run_key_op(c, "use", K2)
    assert res.ok
    _, res = run_key_op(c, "remove", K1)
    assert res.ok
    _, res = run_key_op(c, "list", None)
    assert res.keys == {K2: 3} and res.primary_keys == {K2: 3}
    for f in files:
        with open(f) as fh:
            assert json.load(fh) == [K2]
    c.net.run_for(10.0)
    for s in c.nodes:
        assert all(m.status == MemberStatus.ALIVE for m in s.members())
        assert s.stats["members.reaped"] == 0


def test_key_errors_use_serf_messages() -> None:
    c = make_cluster(2, encrypt_key=K1)
    _, res = run_key_op(c, "remove", K1)
    assert not res.ok and set(res.messages.values()) == {
        "Removing the primary key is not allowed"
    }
    _, res = run_key_op(c, "use", K2)
    assert set(res.messages.values()) == {"Requested key is not in the keyring"}
    plain = make_cluster(2, seed=3)
    _, res = run_key_op(plain, "list", None)
    assert res.num_err == 2 and set(res.messages.values()) == {
        "Keyring is empty (encryption not enabled)"
    }
    _, res = run_key_op(plain, "install", K2)
    assert set(res.messages.values()) == {
        "No keyring to modify (encryption not enabled)"
    }


def test_node_with_wrong_key_stays_out() -> None:
    c = make_cluster(2, encrypt_key=K1)
    bad = c.add(2, encrypt_key=K2)
    bad.join([c.nodes[0].memberlist.advertise], c.net.now)
    c.net.kick()
    c.run_until(lambda: False, 5.0)
    assert c.nodes[0].member("s2") is None
    assert c.nodes[0].memberlist.stats["drop.decrypt"] > 0


def test_keyring_file_survives_restart(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "keyring.json")
    with open(path, "w") as fh:
        json.dump([K2, K1], fh)
    c = make_cluster(1, keyring_file=path)
    kr = c.nodes[0].keyring
    assert kr is not None and kr.keys == [decode_key(K2), decode_key(K1)]
    # an explicit encrypt key becomes primary and the file is rewritten
    c2 = make_cluster(1, seed=5, keyring_file=path, encrypt_key=K1)
    kr2 = c2.nodes[0].keyring
    assert kr2 is not None and kr2.primary == decode_key(K1)
    with open(path) as fh:
        assert json.load(fh) == [K1, K2]
