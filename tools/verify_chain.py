#!/usr/bin/env python3
"""Re-verify an llmcm chain export with nothing but Python's standard library.

Input: the chain export (one JSON commit per line with a "canonical" hex field, as written by
`GET /v1/commits?format=chain` or `llmcm-inspect chain`), or a JSON page {"items": [...]}.

For every commit it checks, independently of llmcm's code (FORMAT.md "Commit payload"):
  * hash == SHA-256(prev_hash || canonical bytes);
  * prev_hash equals the previous commit's hash (the chain is unbroken);
  * the canonical bytes decode, and say the same revision and timestamp as the JSON;
  * revisions are dense (a `restore` commit may jump) and timestamps strictly increase;
  * with --expected REV:HASH, the commit at REV has that hash (an auditor's saved digest).

Exit status 0 when everything holds, 1 on the first failure (printed), 2 on bad usage or input.
"""

import argparse
import hashlib
import json
import struct
import sys
from datetime import datetime, timezone

KINDS = {1: "change", 2: "restore", 3: "compaction", 4: "read_only"}
LIMITS = {"actor": 256, "reason": 4096, "detail": 65536, "ops": 100000, "key": 512, "value": 1 << 20}


class ChainError(Exception):
    pass


def decode_canonical(data):
    """Decodes canonical commit bytes (FORMAT.md) into a dict; raises ChainError."""
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ChainError("canonical bytes end early")
        value = struct.unpack_from(fmt, data, pos)
        pos += size
        return value[0] if len(value) == 1 else value

    def blob(fmt, limit, what):
        nonlocal pos
        n = take(fmt)
        if n > limit:
            raise ChainError(f"{what} length {n} over {limit}")
        if pos + n > len(data):
            raise ChainError(f"{what} runs past the end")
        out = data[pos:pos + n]
        pos += n
        return out

    encoding, kind, revision, timestamp_us = take("<BBQQ")
    if encoding != 1:
        raise ChainError(f"unknown encoding {encoding}")
    if kind not in KINDS:
        raise ChainError(f"unknown kind {kind}")
    actor = blob("<H", LIMITS["actor"], "actor").decode("utf-8")
    reason = blob("<H", LIMITS["reason"], "reason").decode("utf-8")
    blob("<I", LIMITS["detail"], "detail")
    count = take("<I")
    if count > LIMITS["ops"]:
        raise ChainError(f"{count} ops over {LIMITS['ops']}")
    ops = []
    for _ in range(count):
        op_type = take("<B")
        key = blob("<H", LIMITS["key"], "key").decode("utf-8")
        if op_type == 1:
            ops.append(("put", key, blob("<I", LIMITS["value"], "value")))
        elif op_type == 2:
            ops.append(("delete", key, None))
        else:
            raise ChainError(f"unknown op type {op_type}")
    if pos != len(data):
        raise ChainError(f"{len(data) - pos} bytes after the last op")
    return {"kind": KINDS[kind], "revision": revision, "timestamp_us": timestamp_us,
            "actor": actor, "reason": reason, "ops": ops}


def parse_time_us(text):
    """'2026-11-26T22:15:00.123456Z' -> microseconds since the epoch."""
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def read_entries(stream):
    """A JSON page {"items": [...]}, one JSON commit, or NDJSON (one commit per line)."""
    text = stream.read()
    try:
        doc = json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(doc, dict):
        return doc["items"] if "items" in doc else [doc]
    raise ValueError("expected a JSON object or NDJSON")


def verify(entries, expected=None):
    previous = None
    for entry in entries:
        revision = entry.get("revision")
        try:
            canonical = bytes.fromhex(entry["canonical"])
            prev_hash = bytes.fromhex(entry["prev_hash"])
            stored = entry["hash"].lower()
        except (KeyError, ValueError) as error:
            raise ChainError(f"revision {revision}: missing or malformed field ({error})")
        computed = hashlib.sha256(prev_hash + canonical).hexdigest()
        if computed != stored:
            raise ChainError(f"revision {revision}: hash {stored} but SHA-256(prev_hash || canonical) is {computed}")
        commit = decode_canonical(canonical)
        if commit["revision"] != revision:
            raise ChainError(f"revision {revision}: canonical bytes say revision {commit['revision']}")
        if "timestamp" in entry and parse_time_us(entry["timestamp"]) != commit["timestamp_us"]:
            raise ChainError(f"revision {revision}: timestamp {entry['timestamp']} differs from the canonical bytes")
        if previous is not None:
            if entry["prev_hash"].lower() != previous["hash"]:
                raise ChainError(f"revision {revision}: prev_hash does not match revision {previous['revision']}'s hash")
            if revision != previous["revision"] + 1 and commit["kind"] != "restore":
                raise ChainError(f"revision {revision}: follows revision {previous['revision']} (gap)")
            if commit["timestamp_us"] <= previous["timestamp_us"]:
                raise ChainError(f"revision {revision}: timestamp does not increase")
        elif revision == 1 and prev_hash != bytes(32):
            raise ChainError("revision 1: prev_hash is not the genesis (32 zero bytes)")
        if expected and expected[0] == revision and expected[1] != stored:
            raise ChainError(f"revision {revision}: hash {stored}, but the expected digest is {expected[1]}")
        previous = {"revision": revision, "hash": stored, "timestamp_us": commit["timestamp_us"]}
    if previous is None:
        raise ChainError("no commits in the input")
    if expected and not (entries[0]["revision"] <= expected[0] <= previous["revision"]):
        raise ChainError(f"expected revision {expected[0]} is not in the export")
    return entries[0]["revision"], previous


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="chain export (default: standard input)")
    parser.add_argument("--expected", metavar="REV:HASH", help="a saved digest the chain must contain")
    args = parser.parse_args()
    expected = None
    if args.expected:
        try:
            rev, digest = args.expected.split(":", 1)
            expected = (int(rev), digest.lower())
        except ValueError:
            print("verify_chain: --expected takes REV:HASH", file=sys.stderr)
            return 2
    try:
        stream = open(args.file, encoding="utf-8") if args.file else sys.stdin
        with stream:
            entries = read_entries(stream)
    except (OSError, ValueError) as error:
        print(f"verify_chain: cannot read the export: {error}", file=sys.stderr)
        return 2
    try:
        first, last = verify(entries, expected)
    except ChainError as error:
        print(f"FAIL {error}")
        return 1
    print(f"ok: {len(entries)} commits, revisions {first}..{last['revision']}, head hash {last['hash']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
