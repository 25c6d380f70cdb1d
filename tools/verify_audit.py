#!/usr/bin/env python3
"""Verify a Herald audit trail without Herald.

Independent of Herald's code: written from the encoding documented in docs/audit.md, using only
the Python standard library (Ed25519 signature verification included, from RFC 8032).

Usage:
    herald audit export > entries.jsonl
    herald audit checkpoints > checkpoints.jsonl
    herald audit public-key --json > keys.json
    python3 tools/verify_audit.py --entries entries.jsonl --checkpoints checkpoints.jsonl \
        --keys keys.json [--witness herald-data/audit-witness.jsonl]

Exit status 0 when the trail verifies; 1 with "FAIL <reason> at <seq>: <explanation>" when not;
2 on unusable input. Reasons: modified, deleted, reordered, truncated, bad_signature,
witness_mismatch (a checkpoint contradicts the chain).
"""

import argparse
import base64
import hashlib
import json
import sys

# --- Ed25519 verification (RFC 8032, section 5.1) --------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _inv(x):
    return pow(x, P - 2, P)


def _add(a, b):
    """Adds two points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = t1 * 2 * D * t2 % P
    dd = z1 * 2 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _multiply(scalar, point):
    result = (0, 1, 1, 0)  # the neutral element
    while scalar > 0:
        if scalar & 1:
            result = _add(result, point)
        point = _add(point, point)
        scalar >>= 1
    return result


def _decode_point(encoded):
    if len(encoded) != 32:
        return None
    y = int.from_bytes(encoded, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    x2 = (y * y - 1) * _inv(D * y * y + 1) % P
    if x2 == 0:
        if sign:
            return None
        x = 0
    else:
        x = pow(x2, (P + 3) // 8, P)
        if (x * x - x2) % P != 0:
            x = x * SQRT_M1 % P
        if (x * x - x2) % P != 0:
            return None
        if (x & 1) != sign:
            x = P - x
    return (x, y, 1, x * y % P)


_BASE = _decode_point((4 * _inv(5) % P).to_bytes(32, "little"))


def _same_point(a, b):
    return (a[0] * b[2] - b[0] * a[2]) % P == 0 and (a[1] * b[2] - b[1] * a[2]) % P == 0


def ed25519_verify(public_key, message, signature):
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode_point(public_key)
    r = _decode_point(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % L
    return _same_point(_multiply(s, _BASE), _add(r, _multiply(h, a)))


# --- Herald's encoding (docs/audit.md) -------------------------------------------------------


def canonical(value):
    """Sorted keys, no whitespace, ASCII with \\u escapes: exactly the bytes Herald hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


GENESIS = bytes(32)
CHECKPOINT_DOMAIN = b"herald-audit-checkpoint/v1\n"


def checkpoint_message(cp):
    statement = {k: cp[k] for k in ("head", "key_id", "kind", "seq", "time")}
    return CHECKPOINT_DOMAIN + canonical(statement)


class Failure(Exception):
    def __init__(self, reason, seq, explanation):
        super().__init__(f"{reason} at {seq}: {explanation}")
        self.reason, self.seq, self.explanation = reason, seq, explanation


def read_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def verify(entries, checkpoints, keys, witness=None):
    """Returns (entries checked, last seq); raises Failure on the first problem found.

    `checkpoints` are the trail's signed checkpoints (from the database); `witness`, if given,
    the copies in the external witness file, each of which must also be among `checkpoints`.
    """
    problems = []
    vouched = 0
    heads = {}

    def signed(cp):
        key = keys.get(cp.get("key_id"))
        try:
            signature = base64.b64decode(cp["signature"])
        except ValueError:
            return False
        return key is not None and ed25519_verify(key, checkpoint_message(cp), signature)

    for source, items in (("database", checkpoints), ("witness", witness or [])):
        for cp in items:
            if not signed(cp):
                problems.append(Failure("bad_signature", cp["seq"], f"a {source} checkpoint signature does not verify"))
                continue
            vouched = max(vouched, cp["seq"])
            heads.setdefault(cp["seq"], []).append((cp["head"], source))
            if source == "witness" and cp not in checkpoints:
                problems.append(Failure("witness_mismatch", cp["seq"], "a witnessed checkpoint is not in the database"))
    if witness is not None and not witness and checkpoints:
        problems.append(Failure("witness_mismatch", min(cp["seq"] for cp in checkpoints), "the witness is empty"))

    if entries:
        first = entries[0]["seq"]
        anchors = {head for head, _ in heads.get(first - 1, [])}
        if first == 1:
            previous = GENESIS
        elif len(anchors) == 1:
            # A partial export or a pruned trail: anchored at a signed checkpoint.
            previous = bytes.fromhex(anchors.pop())
        else:
            raise Failure("deleted", 1, f"the entries start at {first} and no signed checkpoint anchors them")
        expected = first
    else:
        previous, expected = GENESIS, 1

    present = {entry["seq"] for entry in entries}
    checked = 0
    last_matched = None
    for entry in entries:
        seq = entry["seq"]
        if seq != expected:
            if expected in present:
                problems.append(Failure("reordered", expected, f"entry {expected} is not at its position"))
            elif seq > expected:
                problems.append(Failure("deleted", expected, f"entries {expected} to {seq - 1} are missing"))
            else:
                problems.append(Failure("reordered", seq, f"entry {seq} appears again after {expected - 1}"))
            break
        body = dict(entry)
        stored = body.pop("hash")
        computed = hashlib.sha256(previous + canonical(body)).digest()
        if computed.hex() != stored:
            problems.append(Failure("modified", seq, "the entry does not match its hash"))
            break
        mismatched = [source for head, source in heads.get(seq, []) if head != computed.hex()]
        if mismatched:
            since = 1 if last_matched is None else last_matched + 1
            if "database" in mismatched:
                problems.append(Failure("modified", since, f"the chain between {since} and {seq} was rewritten"))
            else:
                problems.append(Failure("witness_mismatch", seq, "the chain does not match the witness"))
            break
        if seq in heads:
            last_matched = seq
        previous = computed
        expected += 1
        checked += 1
    else:
        last = expected - 1
        if vouched > last:
            problems.append(Failure("truncated", last + 1, f"a signed checkpoint covers {vouched} but the entries end at {last}"))

    if problems:
        raise min(problems, key=lambda f: f.seq)
    return checked, expected - 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", required=True, help="JSON lines of entries (herald audit export)")
    parser.add_argument("--checkpoints", required=True, help="JSON lines of the signed checkpoints (herald audit checkpoints)")
    parser.add_argument("--witness", help="the witness file (JSON lines); every line must be among the checkpoints")
    parser.add_argument("--keys", required=True, help="JSON of public keys (herald audit public-key --json)")
    args = parser.parse_args()
    try:
        entries = read_lines(args.entries)
        checkpoints = read_lines(args.checkpoints)
        witness = read_lines(args.witness) if args.witness else None
        with open(args.keys, encoding="utf-8") as handle:
            keys = {k["key_id"]: base64.b64decode(k["public_key"]) for k in json.load(handle)["keys"]}
    except (OSError, ValueError, KeyError) as error:
        print(f"unusable input: {error}", file=sys.stderr)
        return 2
    try:
        checked, last = verify(entries, checkpoints, keys, witness)
    except Failure as failure:
        print(f"FAIL {failure.reason} at {failure.seq}: {failure.explanation}")
        return 1
    print(f"ok: {checked} entries verified up to {last}, {len(checkpoints)} signed checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
