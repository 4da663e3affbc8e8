"""``vla-rl-ros keygen --out DIR/NAME.key``: an Ed25519 key pair for signed promotions (:mod:`vla_rl_ros.signing`).

The learner's ``signing_key`` takes the private key (mode 0600; keep it on the learner's machine), every
``policy_node``'s ``trusted_keys`` the public one (``NAME.pub`` beside it)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing promotions (learner signs, "
                                      "policy_node trusts)")
    p.add_argument("--out", required=True, metavar="KEY",
                   help="private key file to write (PEM, mode 0600); the public key goes beside it as .pub")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from ..signing import SigningError, generate_keypair, public_key_path

    pub = public_key_path(args.out)
    try:
        kid = generate_keypair(args.out, pub, overwrite=args.force)
    except SigningError as e:
        print(f"vla-rl-ros keygen: error: {e}", file=sys.stderr)
        return 2
    print(f"key {kid}\n  private: {args.out}  (learner_node signing_key; keep it secret)\n"
          f"  public:  {pub}  (policy_node trusted_keys)")
    return 0
