"""Signed promotions: the learner signs every model it announces; ``policy_node`` runs only what a trusted key signed.

No ROS inside. The sha256 in ``/rl/policy_update`` protects against a corrupted
file, not against a wrong or hostile sender: any process on the DDS domain can
publish an announcement. With signing, an announcement carries an Ed25519
signature (the ``cryptography`` library) over one canonical JSON document:

    {"format": "vla_rl_ros.promotion/1", "sha256": <the model file's digest>,
     "version": <its version>, "spec_sha256": <sha256 of the model's spec JSON>,
     "seq": <an integer that grows with every promotion>}

and the announcement becomes::

    {"path", "sha256", "version",
     "signature": {"format", "key_id", "seq", "spec_sha256", "sig"}}   (sig: base64)

:class:`Signer` (the learner) signs with a private key read from a file.
:class:`UpdateGuard` (``policy_node``) decides, before a model is loaded, whether
an announcement may run: signed by a trusted key (:class:`Verifier`), for the
configured spec, newer than the model running (replay), and inside the allowed
models directory. Its refusals are :class:`UpdateRejected` with a ``kind`` (one
counter per kind) and a one-line ``reason``. The file's bytes are then checked
against the signed digest by :func:`~vla_rl_ros.runtime.onnx_policy.load_validated`,
which hashes the very bytes it runs, so a signature binds exactly what runs.

Keys are PEM files: the private key PKCS#8 (mode 0600), the public key
SubjectPublicKeyInfo, as ``openssl genpkey -algorithm ed25519`` /
``openssl pkey -pubout`` write them; ``vla-rl-ros keygen`` makes a pair.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass

FORMAT = "vla_rl_ros.promotion/1"
"""The ``format`` of the signed document (a new layout gets a new format, never a silent change)."""

#: the kinds of refusal :class:`UpdateGuard` counts (policy_node reports one counter per kind)
REJECTION_KINDS = ("unsigned", "bad_signature", "untrusted_key", "wrong_spec", "replayed", "outside_dir")

_SEQ_MAX = 2**63 - 1
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class SigningError(Exception):
    """A key file that cannot be read, written or parsed."""


class UpdateRejected(Exception):
    """An announcement refused before loading: ``kind`` (one of :data:`REJECTION_KINDS`) and ``reason``."""

    def __init__(self, kind: str, reason: str):
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


# ------------------------------------------------------------------ the announcement
def parse_announcement(text: str) -> dict:
    """The ``/rl/policy_update`` JSON as a dict with a non-empty string ``path`` and string-or-absent ``sha256``
    and ``version``; :class:`ValueError` with the reason for anything else (the signature is checked later)."""
    try:
        req = json.loads(text)  # json.JSONDecodeError is a ValueError
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(req, dict) or not isinstance(req.get("path"), str) or not req["path"]:
        raise ValueError('expected a JSON object with a non-empty "path"')
    if "\0" in req["path"]:
        raise ValueError('"path" contains a NUL character')
    for k in ("sha256", "version"):
        if req.get(k) is not None and not isinstance(req[k], str):
            raise ValueError(f'"{k}" must be a string')
    return req


# ------------------------------------------------------------------ keys
def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def key_id(public_key) -> str:
    """A short, stable name for a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(private_path: str) -> str:
    """Where :func:`generate_keypair` puts the public half of ``private_path``: ``x.key`` -> ``x.pub``."""
    base, ext = os.path.splitext(private_path)
    return (base if ext == ".key" else private_path) + ".pub"


def generate_keypair(private_path: str, public_path: str | None = None, *, overwrite: bool = False) -> str:
    """Write a new Ed25519 key pair (private key mode 0600) and return its :func:`key_id`.

    Refuses to replace an existing private key unless ``overwrite``: a lost key means re-trusting every robot."""
    serialization, ed25519 = _crypto()
    public_path = public_path or public_key_path(private_path)
    if not overwrite:
        for p in (private_path, public_path):
            if os.path.exists(p):
                raise SigningError(f"{p} exists; not overwriting a key (pass overwrite to replace it)")
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for path, data, mode in ((private_path, priv, 0o600), (public_path, pub, 0o644)):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    return key_id(key.public_key())


def ensure_keypair(private_path: str, public_path: str | None = None) -> str:
    """The :func:`key_id` of the pair at ``private_path``, generating it first when the private key is missing
    (the sim's per-run key). A public key that is missing or does not match is rewritten from the private one."""
    serialization, _ = _crypto()
    public_path = public_path or public_key_path(private_path)
    if not os.path.exists(private_path):
        if os.path.exists(public_path):
            os.remove(public_path)  # the public half of a key that no longer exists
        return generate_keypair(private_path, public_path)
    key = load_private_key(private_path)
    kid = key_id(key.public_key())
    try:
        ok = key_id(load_public_key(public_path)) == kid
    except SigningError:
        ok = False
    if not ok:
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        with open(public_path, "wb") as f:
            f.write(pub)
    return kid


def _load_pem(path: str, what: str, private: bool):
    serialization, ed25519 = _crypto()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SigningError(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path} is not {'an unencrypted PEM private' if private else 'a PEM public'} key: {e}"
                           ) from e
    cls = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, cls):
        raise SigningError(f"{path} holds a {type(key).__name__}, not an Ed25519{'' if private else ' public'} key")
    return key


def load_private_key(path: str):
    """The Ed25519 private key in the PEM file ``path`` (:class:`SigningError` if it is anything else)."""
    return _load_pem(path, "signing key", private=True)


def load_public_key(path: str):
    """The Ed25519 public key in the PEM file ``path`` (:class:`SigningError` if it is anything else)."""
    return _load_pem(path, "trusted key", private=False)


# ------------------------------------------------------------------ the signed document
def spec_digest(spec) -> str:
    """sha256 of a spec's canonical JSON (a :class:`~vla_rl_ros.spec.Spec`, or its ``to_json()`` string)."""
    text = spec if isinstance(spec, str) else spec.to_json()
    return hashlib.sha256(text.encode()).hexdigest()


def payload(sha256: str, version: str, spec_sha256: str, seq: int) -> bytes:
    """The exact bytes that are signed: canonical JSON (sorted keys, no spaces, ASCII)."""
    doc = {"format": FORMAT, "sha256": sha256, "version": version, "spec_sha256": spec_sha256, "seq": int(seq)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Signer:
    """Signs promotions with the private key in ``private_path``.

    ``seq`` grows with every signature: nanoseconds of wall time, and always above the last one this signer
    issued, so a later promotion is never older than an earlier one (the replay check on the robot)."""

    def __init__(self, private_path: str):
        self.path = private_path
        self._key = load_private_key(private_path)
        self.key_id = key_id(self._key.public_key())
        self._last_seq = 0

    def sign(self, sha256: str, version: str, spec, seq: int | None = None) -> dict:
        """The ``signature`` object of an announcement for the model with digest ``sha256``, ``version``, ``spec``
        (a Spec or its JSON)."""
        if seq is None:
            seq = max(time.time_ns(), self._last_seq + 1)
        self._last_seq = max(self._last_seq, int(seq))
        sd = spec_digest(spec)
        sig = self._key.sign(payload(sha256, version, sd, seq))
        return {"format": FORMAT, "key_id": self.key_id, "seq": int(seq), "spec_sha256": sd,
                "sig": base64.b64encode(sig).decode("ascii")}

    def announcement(self, path: str, sha256: str, version: str, spec, seq: int | None = None) -> dict:
        """The whole ``/rl/policy_update`` document, signed."""
        return {"path": path, "sha256": sha256, "version": version,
                "signature": self.sign(sha256, version, spec, seq)}


@dataclass(frozen=True)
class Verified:
    """What a good signature vouches for."""

    key_id: str
    seq: int


class Verifier:
    """Checks announcements against trusted public keys (PEM files).

    A key file that cannot be read is not fatal: it is listed in ``errors`` and trusts nothing, and the
    others still work (with none readable, every announcement is refused: safe by default)."""

    def __init__(self, trusted_key_paths):
        self.keys: dict[str, object] = {}
        self.errors: list[str] = []
        for p in trusted_key_paths:
            try:
                k = load_public_key(p)
            except SigningError as e:
                self.errors.append(str(e))
                continue
            self.keys[key_id(k)] = k

    def verify(self, req: dict) -> Verified:
        """Verify the ``signature`` of announcement ``req`` (:class:`UpdateRejected` if it does not hold)."""
        from cryptography.exceptions import InvalidSignature

        sig = req.get("signature")
        if sig is None:
            raise UpdateRejected("unsigned", "unsigned announcement: this policy_node runs only models signed by "
                                 "a trusted key (trusted_keys)")
        if not isinstance(sig, dict):
            raise UpdateRejected("bad_signature", "malformed signature: expected a JSON object")
        fmt, kid, seq, sd, b64 = (sig.get(k) for k in ("format", "key_id", "seq", "spec_sha256", "sig"))
        if fmt != FORMAT:
            raise UpdateRejected("bad_signature", f"signature format {fmt!r} is not {FORMAT!r}")
        if not isinstance(kid, str) or not isinstance(sd, str) or not isinstance(b64, str):
            raise UpdateRejected("bad_signature", "malformed signature: key_id, spec_sha256 and sig must be strings")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _SEQ_MAX:
            raise UpdateRejected("bad_signature", f"malformed signature: seq {seq!r} is not a non-negative 64-bit "
                                 "integer")
        sha, version = req.get("sha256"), req.get("version")
        if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha) or not isinstance(version, str):
            raise UpdateRejected("bad_signature", "a signed announcement needs its sha256 (64 lower-case hex digits) "
                                 "and its version (a string)")
        key = self.keys.get(kid)
        if key is None:
            why = f" ({'; '.join(self.errors)})" if self.errors else ""
            raise UpdateRejected("untrusted_key", f"signed by key {kid[:32]!r}, which is not among the "
                                 f"{len(self.keys)} trusted key(s){why}")
        try:
            raw = base64.b64decode(b64.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise UpdateRejected("bad_signature", "malformed signature: sig is not base64") from None
        try:
            key.verify(raw, payload(sha, version, sd, seq))
        except InvalidSignature:
            raise UpdateRejected("bad_signature", f"signature does not verify with trusted key {kid}: the "
                                 "digest, version, spec or seq were not what the key signed") from None
        return Verified(kid, seq)


def inside(path: str, directory: str) -> bool:
    """Whether ``path``, with every symlink resolved, lies inside ``directory`` (also resolved)."""
    p, d = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([p, d]) == d and p != d


class UpdateGuard:
    """``policy_node``'s admission rule for announced models (pure: no ROS, no file contents).

    * ``trusted_key_paths`` non-empty: an announcement must carry a good signature by one of these keys, for the
      configured spec (``spec``), with a ``seq`` newer than the running model's (an older one is a replay; the
      same seq is accepted only for the very same digest: the incumbent announced again).
    * ``allowed_dir`` non-empty: the model file must lie inside it (symlinks resolved).
    * ``state_path`` non-empty: the seq and digest of the newest signed model run are kept in this JSON file
      (written atomically), so the replay bound survives a restart of the node; without it a restarted node
      would take any validly signed promotion, an old one replayed included.

    :meth:`check` raises :class:`UpdateRejected` or returns the seq to record; call :meth:`installed` once the
    model is running. ``counts`` holds the refusals per kind (:data:`REJECTION_KINDS`)."""

    def __init__(self, trusted_key_paths=(), allowed_dir: str = "", spec=None, state_path: str = ""):
        paths = [p for p in trusted_key_paths if p]
        self.required = bool(paths)
        self.verifier = Verifier(paths) if paths else None
        self.allowed_dir = os.path.realpath(allowed_dir) if allowed_dir else ""
        self.spec_sha256 = spec_digest(spec) if spec is not None else None
        self.running_seq = -1  # the start-up model (model_path: trusted by configuration) is older than any promotion
        self.running_sha = ""
        self.counts = {k: 0 for k in REJECTION_KINDS}
        self.state_path = state_path
        self.state_error = ""
        if state_path and os.path.exists(state_path):
            try:
                with open(state_path) as f:
                    st = json.load(f)
                seq, sha = st["seq"], st["sha256"]
                if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(sha, str):
                    raise ValueError("seq must be an integer and sha256 a string")
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
                # refuse to forget the bound silently: keep the strictest one and say so
                self.running_seq, self.state_error = _SEQ_MAX, f"unreadable replay state {state_path}: {e}; " \
                    "refusing every signed announcement until it is fixed or removed"
            else:
                self.running_seq, self.running_sha = seq, sha

    @property
    def config_errors(self) -> list[str]:
        return (list(self.verifier.errors) if self.verifier else []) + ([self.state_error] if self.state_error else [])

    def check(self, req: dict, path: str) -> int:
        """Admit announcement ``req`` for the model at ``path`` (resolved); return its seq (-1 when unsigned and
        signatures are not required)."""
        try:
            return self._check(req, path)
        except UpdateRejected as e:
            self.counts[e.kind] = self.counts.get(e.kind, 0) + 1
            raise

    def _check(self, req: dict, path: str) -> int:
        if self.allowed_dir and not inside(path, self.allowed_dir):
            raise UpdateRejected("outside_dir", f"{path} is outside the allowed models directory {self.allowed_dir}")
        if not self.required:
            return -1
        v = self.verifier.verify(req)
        sd = req["signature"]["spec_sha256"]
        if self.spec_sha256 is not None and sd != self.spec_sha256:
            raise UpdateRejected("wrong_spec", f"signed for spec {sd[:12]}, but this node is configured with spec "
                                 f"{self.spec_sha256[:12]}")
        sha = req["sha256"]
        if v.seq < self.running_seq or (v.seq == self.running_seq and sha != self.running_sha):
            raise UpdateRejected("replayed", f"replayed or out-of-order announcement: seq {v.seq} is not newer than "
                                 f"the running model's {self.running_seq}")
        return v.seq

    def installed(self, seq: int, sha256: str) -> None:
        """Record the model now running (its seq bounds every later announcement)."""
        self.running_seq = max(self.running_seq, int(seq))
        self.running_sha = sha256.strip().lower()
        if self.state_path and seq >= 0:
            try:
                d = os.path.dirname(os.path.abspath(self.state_path))
                os.makedirs(d, exist_ok=True)
                tmp = os.path.join(d, f".{os.path.basename(self.state_path)}.{os.getpid()}.tmp")
                with open(tmp, "w") as f:
                    json.dump({"seq": self.running_seq, "sha256": self.running_sha}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.state_path)
            except OSError as e:  # the model runs; only the bound's persistence failed (a full disk): say so
                self.state_error = f"cannot write replay state {self.state_path}: {e}"

    @property
    def n_rejected(self) -> int:
        return sum(self.counts.values())
