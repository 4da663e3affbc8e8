"""Signed promotions, the core (vla_rl_ros/signing.py): keys, signatures, and policy_node's admission rule.
No ROS: real Ed25519 keys from `cryptography`, real ONNX files."""
from __future__ import annotations

import base64
import copy
import os
import stat

import pytest

import onnx_models as om
from vla_rl_ros.signing import (FORMAT, REJECTION_KINDS, Signer, SigningError, UpdateGuard, UpdateRejected, Verifier,
                                ensure_keypair, generate_keypair, inside, load_private_key, load_public_key, payload,
                                public_key_path, spec_digest)
from vla_rl_ros.spec import Spec

SPEC = Spec()
SHA = "ab" * 32


@pytest.fixture
def keys(tmp_path):
    """Two key pairs: ``a`` (trusted) and ``b`` (not)."""
    out = {}
    for name in ("a", "b"):
        priv = str(tmp_path / "keys" / f"{name}.key")
        out[name] = (priv, public_key_path(priv), generate_keypair(priv))
    return out


def rejected(kind, fn, *args):
    with pytest.raises(UpdateRejected) as e:
        fn(*args)
    assert e.value.kind == kind, e.value.reason
    return e.value.reason


# ------------------------------------------------------------------ keys
def test_keygen_writes_a_private_key_only_its_owner_can_read_and_a_public_key(keys):
    priv, pub, kid = keys["a"]
    assert pub.endswith("a.pub") and os.path.isfile(pub)
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert open(priv).read().startswith("-----BEGIN PRIVATE KEY-----")
    assert open(pub).read().startswith("-----BEGIN PUBLIC KEY-----")
    assert len(kid) == 16 and kid != keys["b"][2]
    assert Signer(priv).key_id == kid and Verifier([pub]).keys.keys() == {kid}
    load_private_key(priv), load_public_key(pub)


def test_keygen_never_overwrites_a_key_unless_asked(keys):
    priv, pub, kid = keys["a"]
    with pytest.raises(SigningError, match="not overwriting"):
        generate_keypair(priv)
    assert Signer(priv).key_id == kid
    assert generate_keypair(priv, overwrite=True) != kid


def test_ensure_keypair_makes_one_once_and_repairs_a_missing_public_key(tmp_path):
    priv = str(tmp_path / "run" / "keys" / "learner.key")
    kid = ensure_keypair(priv)
    assert ensure_keypair(priv) == kid  # kept, not regenerated
    os.remove(public_key_path(priv))
    assert ensure_keypair(priv) == kid and Verifier([public_key_path(priv)]).keys.keys() == {kid}


def test_key_files_of_the_wrong_kind_are_refused_with_the_reason(tmp_path, keys):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(SigningError, match="not an unencrypted PEM private key"):
        load_private_key(str(junk))
    with pytest.raises(SigningError, match="not a PEM public key"):
        load_public_key(str(junk))
    with pytest.raises(SigningError, match="cannot read"):
        load_public_key(str(tmp_path / "missing.pub"))
    with pytest.raises(SigningError):
        load_private_key(keys["a"][1])  # a public key where the private one belongs


# ------------------------------------------------------------------ signatures
def test_payload_is_canonical_and_covers_digest_version_spec_and_seq():
    p = payload(SHA, "v1", spec_digest(SPEC), 7)
    assert p == payload(SHA, "v1", spec_digest(SPEC.to_json()), 7)
    assert b'"format":"vla_rl_ros.promotion/1"' in p and b" " not in p
    for other in (payload("cd" * 32, "v1", spec_digest(SPEC), 7), payload(SHA, "v2", spec_digest(SPEC), 7),
                  payload(SHA, "v1", spec_digest(SPEC.replace(max_ee_step=0.03)), 7),
                  payload(SHA, "v1", spec_digest(SPEC), 8)):
        assert other != p


def test_a_good_signature_verifies_and_names_its_key_and_seq(keys):
    priv, pub, kid = keys["a"]
    req = Signer(priv).announcement("/m/v1.onnx", SHA, "v1", SPEC, seq=42)
    assert req["signature"]["format"] == FORMAT and req["signature"]["key_id"] == kid
    v = Verifier([pub, keys["b"][1]]).verify(req)
    assert (v.key_id, v.seq) == (kid, 42)


def test_signer_seq_grows_with_every_signature(keys):
    s = Signer(keys["a"][0])
    seqs = [s.sign(SHA, f"v{i}", SPEC)["seq"] for i in range(5)]
    assert seqs == sorted(set(seqs))
    assert s.sign(SHA, "v", SPEC, seq=seqs[-1] + 10)["seq"] == seqs[-1] + 10
    assert s.sign(SHA, "v", SPEC)["seq"] > seqs[-1] + 10  # never below one it issued, whatever the clock says


@pytest.mark.parametrize("field,value", [("sha256", "cd" * 32), ("version", "v2")])
def test_changing_what_was_signed_breaks_the_signature(keys, field, value):
    req = Signer(keys["a"][0]).announcement("/m/v1.onnx", SHA, "v1", SPEC, seq=1)
    req[field] = value
    assert "does not verify" in rejected("bad_signature", Verifier([keys["a"][1]]).verify, req)


@pytest.mark.parametrize("field,value", [("seq", 2), ("spec_sha256", spec_digest(SPEC.replace(task="pick_place")))])
def test_changing_the_signed_seq_or_spec_breaks_the_signature(keys, field, value):
    req = Signer(keys["a"][0]).announcement("/m/v1.onnx", SHA, "v1", SPEC, seq=1)
    req["signature"][field] = value
    rejected("bad_signature", Verifier([keys["a"][1]]).verify, req)


def test_unsigned_and_untrusted_announcements_are_refused(keys):
    ver = Verifier([keys["a"][1]])
    assert "unsigned" in rejected("unsigned", ver.verify, {"path": "/m", "sha256": SHA, "version": "v1"})
    by_b = Signer(keys["b"][0]).announcement("/m", SHA, "v1", SPEC)
    assert keys["b"][2] in rejected("untrusted_key", ver.verify, by_b)
    # a key id copied from the trusted key does not help a signature made by another key
    by_b["signature"]["key_id"] = keys["a"][2]
    rejected("bad_signature", ver.verify, by_b)


@pytest.mark.parametrize("mutate", [
    lambda r: r.__setitem__("signature", "abc"),
    lambda r: r["signature"].__setitem__("format", "other/1"),
    lambda r: r["signature"].__setitem__("sig", "%%% not base64"),
    lambda r: r["signature"].__setitem__("sig", base64.b64encode(b"short").decode()),
    lambda r: r["signature"].__setitem__("seq", True),
    lambda r: r["signature"].__setitem__("seq", -1),
    lambda r: r["signature"].__setitem__("seq", 2**70),
    lambda r: r["signature"].__setitem__("seq", "5"),
    lambda r: r["signature"].__setitem__("key_id", None),
    lambda r: r.__setitem__("sha256", ""),  # an empty digest would skip the file check: never with a signature
    lambda r: r.__setitem__("sha256", SHA.upper()),
    lambda r: r.__setitem__("sha256", SHA + "\n"),
    lambda r: r.__setitem__("version", None),
])
def test_malformed_signatures_are_refused_never_raise_anything_else(keys, mutate):
    req = Signer(keys["a"][0]).announcement("/m", SHA, "v1", SPEC, seq=3)
    mutate(req)
    rejected("bad_signature", Verifier([keys["a"][1]]).verify, req)


def test_an_unreadable_trusted_key_trusts_nothing_and_says_why(tmp_path, keys):
    ver = Verifier([str(tmp_path / "missing.pub")])
    assert ver.keys == {} and "cannot read trusted key" in ver.errors[0]
    req = Signer(keys["a"][0]).announcement("/m", SHA, "v1", SPEC)
    assert "cannot read trusted key" in rejected("untrusted_key", ver.verify, req)


# ------------------------------------------------------------------ the admission rule
def test_guard_without_keys_or_directory_admits_anything_as_before(tmp_path):
    g = UpdateGuard([""], "", SPEC)
    assert not g.required and g.check({"path": "/x", "sha256": None, "version": None}, "/x") == -1
    assert g.n_rejected == 0


def test_guard_with_keys_refuses_unsigned_wrong_spec_and_replays_and_counts_each(tmp_path, keys):
    priv, pub, _ = keys["a"]
    s = Signer(priv)
    g = UpdateGuard([pub], "", SPEC)
    assert g.required
    rejected("unsigned", g.check, {"path": "/m", "sha256": SHA, "version": "v1"}, "/m")
    other = s.announcement("/m", SHA, "v1", SPEC.replace(task="pick_place"), seq=5)
    assert "configured with spec" in rejected("wrong_spec", g.check, other, "/m")

    v5 = s.announcement("/m/v5", SHA, "v5", SPEC, seq=5)
    assert g.check(v5, "/m/v5") == 5
    g.installed(5, SHA)
    v4 = s.announcement("/m/v4", "cd" * 32, "v4", SPEC, seq=4)
    assert "not newer" in rejected("replayed", g.check, v4, "/m/v4")
    assert g.check(copy.deepcopy(v5), "/m/v5") == 5  # the incumbent announced again: the same digest, admitted
    twin5 = s.announcement("/m/x", "cd" * 32, "x", SPEC, seq=5)
    rejected("replayed", g.check, twin5, "/m/x")  # the same seq for another model
    assert g.check(s.announcement("/m/v6", "cd" * 32, "v6", SPEC, seq=6), "/m/v6") == 6
    assert g.counts == {**{k: 0 for k in REJECTION_KINDS}, "unsigned": 1, "wrong_spec": 1, "replayed": 2}
    assert g.n_rejected == 4


def test_guard_keeps_the_replay_bound_across_a_restart_in_its_state_file(tmp_path, keys):
    priv, pub, _ = keys["a"]
    s = Signer(priv)
    state = str(tmp_path / "state" / "replay.json")
    g = UpdateGuard([pub], "", SPEC, state_path=state)
    assert g.config_errors == [] and g.running_seq == -1
    assert g.check(s.announcement("/m/v5", SHA, "v5", SPEC, seq=5), "/m/v5") == 5
    g.installed(5, SHA)
    restarted = UpdateGuard([pub], "", SPEC, state_path=state)
    assert (restarted.running_seq, restarted.running_sha) == (5, SHA)
    rejected("replayed", restarted.check, s.announcement("/m/v4", "cd" * 32, "v4", SPEC, seq=4), "/m/v4")
    assert restarted.check(s.announcement("/m/v5", SHA, "v5", SPEC, seq=5), "/m/v5") == 5  # the incumbent again
    unsigned = UpdateGuard([], "", SPEC, state_path=str(tmp_path / "other.json"))
    unsigned.installed(-1, SHA)
    assert not os.path.exists(tmp_path / "other.json")  # nothing signed ran: nothing to keep


def test_an_unreadable_replay_state_refuses_every_signed_announcement(tmp_path, keys):
    priv, pub, _ = keys["a"]
    state = tmp_path / "replay.json"
    state.write_text("{torn")
    g = UpdateGuard([pub], "", SPEC, state_path=str(state))
    assert "unreadable replay state" in g.config_errors[0]
    rejected("replayed", g.check, Signer(priv).announcement("/m", SHA, "v", SPEC), "/m")


def test_guard_restricts_models_to_the_allowed_directory_symlinks_resolved(tmp_path):
    allowed = tmp_path / "run" / "models"
    allowed.mkdir(parents=True)
    (allowed / "m.onnx").write_bytes(b"x")
    (tmp_path / "evil.onnx").write_bytes(b"x")
    (allowed / "link.onnx").symlink_to(tmp_path / "evil.onnx")
    g = UpdateGuard([], str(allowed), SPEC)
    req = {"path": "", "sha256": None, "version": None}
    assert g.check(req, str(allowed / "m.onnx")) == -1
    for bad in (tmp_path / "evil.onnx", allowed / ".." / ".." / "evil.onnx", allowed / "link.onnx",
                tmp_path / "run" / "models2" / "m.onnx", allowed):
        assert "outside the allowed models directory" in rejected("outside_dir", g.check, req, str(bad))
    assert g.counts["outside_dir"] == 5
    assert inside(str(allowed / "sub" / "m.onnx"), str(allowed))


def test_a_learner_signed_model_file_passes_the_guard_of_a_node_with_the_same_spec(tmp_path, keys):
    """What learner_node does (sign the spec the file carries) is what policy_node checks (its configured spec)."""
    from vla_rl_ros.algos.export import read_model_metadata
    from vla_rl_ros.runtime.onnx_policy import load_validated, sha256_file

    models = tmp_path / "models"
    models.mkdir()
    path = om.write(models / "v1.onnx", SPEC, "reach", version="v1")
    sha = sha256_file(path)
    req = Signer(keys["a"][0]).announcement(path, sha, "v1", read_model_metadata(path)[0])
    g = UpdateGuard([keys["a"][1]], str(models), Spec())
    seq = g.check(req, path)
    pol = load_validated(path, req["sha256"], Spec(), expected_version=req["version"])
    g.installed(seq, pol.sha256)
    assert g.running_seq == seq and g.running_sha == sha


# ------------------------------------------------------------------ the sim's keys and the CLI
def test_sim_gives_the_learner_the_runs_private_key_and_the_policy_only_its_public_key(tmp_path):
    from vla_rl_ros.graph import node_parameters, sim_keys

    run = str(tmp_path / "r")
    p = node_parameters("sim", task="reach", run_dir=run)
    key, pub = sim_keys(run)
    assert p["learner_node"]["signing_key"] == key
    assert p["policy_node"]["trusted_keys"] == [pub]
    assert p["policy_node"]["allowed_models_dir"] == os.path.join(run, "models")
    assert p["policy_node"]["replay_state_file"] == os.path.join(run, "keys", "policy_node_replay.json")
    assert "signing_key" not in p["policy_node"] and key not in str(p["policy_node"])
    robot = node_parameters("robot", run_dir=run)
    assert "trusted_keys" not in robot["policy_node"] and "signing_key" not in robot["learner_node"]


def test_sim_makes_the_runs_key_pair_once(tmp_path):
    from vla_rl_ros.commands.sim import _ensure_sim_keys
    from vla_rl_ros.graph import sim_keys

    run = str(tmp_path / "r")
    _ensure_sim_keys(run)
    key, pub = sim_keys(run)
    kid = Signer(key).key_id
    _ensure_sim_keys(run)
    assert Signer(key).key_id == kid and Verifier([pub]).keys.keys() == {kid}


def test_keygen_verb(tmp_path, capsys):
    from vla_rl_ros.cli import main

    out = str(tmp_path / "k" / "learner.key")
    assert main(["keygen", "--out", out]) == 0
    kid = Signer(out).key_id
    assert kid in capsys.readouterr().out and os.path.isfile(str(tmp_path / "k" / "learner.pub"))
    assert main(["keygen", "--out", out]) == 2 and Signer(out).key_id == kid
    assert main(["keygen", "--out", out, "--force"]) == 0 and Signer(out).key_id != kid


def test_the_sros2_policy_gives_each_node_an_enclave_and_only_the_learner_may_announce_models():
    """docs/sros2/policy.xml: one enclave per node of both graphs; policy_node may read/write exactly the
    topics of its TOPICS table (in: subscribe, out: publish); /rl/policy_update has one publisher, the learner."""
    import xml.etree.ElementTree as ET

    from vla_rl_ros.graph import GRAPHS, repo_root
    from vla_rl_ros.nodes.policy_node import TOPICS

    root = ET.parse(os.path.join(repo_root(), "docs", "sros2", "policy.xml")).getroot()
    allowed: dict[str, dict[str, set]] = {}
    for enc in root.iter("enclave"):
        prof = enc.find("profiles/profile")
        assert enc.get("path") == f"/vla_rl_ros/{prof.get('node')}"
        rules = allowed.setdefault(prof.get("node"), {"publish": set(), "subscribe": set()})
        for t in prof.findall("topics"):
            for kind in ("publish", "subscribe"):
                if t.get(kind) == "ALLOW":
                    rules[kind] |= {"/" + x.text for x in t.findall("topic")}
    assert set(allowed) == {n for g in GRAPHS.values() for n in g.nodes}
    mine = allowed["policy_node"]
    for topic, desc in TOPICS.values():
        assert topic in mine["subscribe" if " in" in desc.split(":")[0] else "publish"], topic
    assert [n for n, r in allowed.items() if "/rl/policy_update" in r["publish"]] == ["learner_node"]
