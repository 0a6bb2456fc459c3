#!/usr/bin/env python3
"""Independent Python implementation of the vistter control-plane contract (v1).

Written from the public contract only (DESIGN.md §3, schemas/control/*.v1.json and
schemas/examples/README.md), not from the agent's Rust sources, so that the Rust tests can
check that a second, separate implementation agrees with the agent byte for byte.

The contract, in short:
  * Every message is one JSON object (the envelope): schema_version, message_id,
    correlation_id, timestamp, optional expires_at, device_id, type, payload, signature; every
    message a device sends also has an integer `seq` (its MQTT Last Will has `after_seq` instead).
  * Signed bytes = b"vistter.envelope.v1\\n" + RFC 8785 (JCS) canonical JSON of the envelope
    without its `signature` member. ed25519; signature = {"alg": "ed25519", "key_id": ...,
    "value": base64 (standard alphabet, padded) of the 64-byte signature}.
  * A secret (stream key, camera password) travels as {"sealed": base64(crypto_box_seal(
    secret_utf8, device_X25519_public_key))}.

Subcommands (each prints one line of JSON on stdout):
  sign          build and sign a command envelope
  verify        verify the signatures of one or more messages
  unseal        open a sealed box (for self-tests)
  mqtt-command  send a signed command over MQTT and collect its verified replies
  selftest      check this implementation against the golden messages in schemas/examples

Exit codes: 0 success; 1 a check failed (bad signature, wrong reply, selftest mismatch);
2 bad usage or input; 3 MQTT connection failure or timeout.

Needs: pynacl, rfc8785, paho-mqtt >= 2 (scripts/setup.sh installs them into <repo>/.venv).
"""

import argparse
import base64
import binascii
import datetime as dt
import json
import os
import queue
import re
import sys
import time
import uuid

import nacl.exceptions
import nacl.public
import nacl.signing
import rfc8785

SIGNING_PREFIX = b"vistter.envelope.v1\n"
SCHEMA_VERSION = "1.0"
COMMAND_TYPES = ("PING", "STREAM_CONTROL", "TIMELINE_EXECUTE", "OVERLAY_UPDATE",
                 "CAMERA_ACTION", "DEVICE_CONFIG", "TIMELINE_LOAD")
REPLY_TYPES = ("ACK", "NACK", "PROGRESS", "RESULT")
DEVICE_TYPES = REPLY_TYPES + ("EVENT", "METRICS", "STATE")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$")

EXIT_CHECK, EXIT_USAGE, EXIT_TRANSPORT = 1, 2, 3


class Failure(Exception):
    """A clear, user-facing error; `code` is the process exit code."""

    def __init__(self, message, code=EXIT_CHECK):
        super().__init__(message)
        self.code = code


class Timeout(Failure):
    def __init__(self, message):
        super().__init__(message, EXIT_TRANSPORT)


# ---------------------------------------------------------------------------------------------
# JSON, base64 and time helpers


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate member {key!r}")
        obj[key] = value
    return obj


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(text, what):
    """Strict JSON: no duplicate members, no NaN/Infinity (both would make signing ambiguous)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise Failure(f"{what} is not valid JSON: {e}", EXIT_USAGE) from None


def dumps(obj):
    """One line of JSON (whitespace and escaping do not matter: signatures cover the JCS form)."""
    return json.dumps(obj, separators=(",", ":"))


def b64decode(text, what, length=None):
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise Failure(f"{what} is not valid base64", EXIT_USAGE) from None
    if length is not None and len(raw) != length:
        raise Failure(f"{what} must decode to {length} bytes, got {len(raw)}", EXIT_USAGE)
    return raw


def b64encode(raw):
    return base64.b64encode(raw).decode("ascii")


def format_time(t):
    """RFC 3339, UTC, milliseconds, `Z`: 2026-11-24T12:00:00.000Z."""
    t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(text, what):
    m = RFC3339_RE.match(text)
    if not m:
        raise Failure(f"{what} {text!r} is not an RFC 3339 date-time", EXIT_USAGE)
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micros = int((frac or "0").ljust(9, "0")[:6])
    tz = dt.timezone.utc
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour), int(minute),
                           int(second), micros, tzinfo=tz)
    except ValueError as e:
        raise Failure(f"{what} {text!r}: {e}", EXIT_USAGE) from None


# ---------------------------------------------------------------------------------------------
# Signing and verification


def signed_bytes(message):
    """The exact bytes a signature covers."""
    body = {k: v for k, v in message.items() if k != "signature"}
    try:
        return SIGNING_PREFIX + rfc8785.dumps(body)
    except rfc8785.CanonicalizationError as e:
        raise Failure(f"message cannot be canonicalized (RFC 8785): {e}") from None


def signing_key(seed_b64):
    return nacl.signing.SigningKey(b64decode(seed_b64, "ed25519 seed", 32))


def verify_key(public_b64):
    return nacl.signing.VerifyKey(b64decode(public_b64, "ed25519 public key", 32))


def sign_message(message, key, key_id):
    """Returns a copy of `message` with a fresh `signature` member."""
    value = key.sign(signed_bytes(message)).signature
    signed = {k: v for k, v in message.items() if k != "signature"}
    signed["signature"] = {"alg": "ed25519", "key_id": key_id, "value": b64encode(value)}
    return signed


def describe(message, index=None, label="message"):
    where = f"{label} {index}" if index is not None else label
    if isinstance(message, dict):
        return f"{where} (type {message.get('type')!r}, message_id {message.get('message_id')!r})"
    return where


def verify_message(message, key, index=None, key_id=None, label="message"):
    """Raises Failure unless `message` carries a valid ed25519 signature by `key`."""
    who = describe(message, index, label)
    if not isinstance(message, dict):
        raise Failure(f"{who}: not a JSON object")
    sig = message.get("signature")
    if not isinstance(sig, dict):
        raise Failure(f"{who}: no signature object")
    if sig.get("alg") != "ed25519":
        raise Failure(f"{who}: signature.alg is {sig.get('alg')!r}, expected 'ed25519'")
    if key_id is not None and sig.get("key_id") != key_id:
        raise Failure(f"{who}: signature.key_id is {sig.get('key_id')!r}, expected {key_id!r}")
    value = sig.get("value")
    if not isinstance(value, str):
        raise Failure(f"{who}: signature.value is not a string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Failure(f"{who}: signature.value is not valid base64") from None
    if len(raw) != 64:
        raise Failure(f"{who}: signature.value decodes to {len(raw)} bytes, expected 64")
    try:
        key.verify(signed_bytes(message), raw)
    except nacl.exceptions.BadSignatureError:
        raise Failure(f"{who}: bad signature") from None


# ---------------------------------------------------------------------------------------------
# Sealed secrets


def seal(secret, sealing_public_b64):
    box = nacl.public.SealedBox(
        nacl.public.PublicKey(b64decode(sealing_public_b64, "X25519 sealing key", 32)))
    return b64encode(box.encrypt(secret.encode("utf-8")))


def unseal(sealed_b64, sealing_private_b64):
    box = nacl.public.SealedBox(
        nacl.public.PrivateKey(b64decode(sealing_private_b64, "X25519 private key", 32)))
    try:
        plain = box.decrypt(b64decode(sealed_b64, "sealed value"))
    except nacl.exceptions.CryptoError:
        raise Failure("sealed box does not open with this key (wrong key or corrupted)") from None
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError:
        raise Failure("sealed secret is not UTF-8") from None


def _pointer_tokens(pointer):
    """RFC 6901 JSON pointer → list of reference tokens."""
    if not pointer.startswith("/"):
        raise Failure(f"JSON pointer {pointer!r} must start with '/'", EXIT_USAGE)
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def seal_at(payload, pointer, sealing_public_b64):
    """Replaces the string at `pointer` (relative to the payload) with {"sealed": ...}."""
    parent, key = None, None
    node = payload
    for token in _pointer_tokens(pointer):
        if isinstance(node, dict) and token in node:
            parent, key = node, token
        elif (isinstance(node, list) and re.fullmatch(r"0|[1-9][0-9]*", token)
              and int(token) < len(node)):
            parent, key = node, int(token)
        else:
            raise Failure(f"--seal {pointer}: nothing at {token!r} in the payload", EXIT_USAGE)
        node = parent[key]
    if not isinstance(node, str):
        raise Failure(f"--seal {pointer}: the value there is not a string", EXIT_USAGE)
    parent[key] = {"sealed": seal(node, sealing_public_b64)}


# ---------------------------------------------------------------------------------------------
# Building commands


def build_command(*, seed, key_id, device_id, msg_type, payload, message_id=None,
                  timestamp=None, expires_in_s=None, expires_at=None, seals=()):
    """A signed command envelope. `seals` = [(json_pointer, sealing_public_key_b64)]."""
    if not isinstance(payload, dict):
        raise Failure("--payload must be a JSON object", EXIT_USAGE)
    if message_id is None:
        message_id = str(uuid.uuid4())
    elif not UUID_RE.match(message_id):
        raise Failure(f"--message-id {message_id!r} is not a UUID", EXIT_USAGE)
    if timestamp is None:
        now = dt.datetime.now(dt.timezone.utc)
        timestamp = format_time(now)
    else:
        now = parse_time(timestamp, "--timestamp")
    for pointer, sealing_key in seals:
        seal_at(payload, pointer, sealing_key)
    message = {
        "schema_version": SCHEMA_VERSION,
        "message_id": message_id,
        "correlation_id": None,
        "timestamp": timestamp,
        "device_id": device_id,
        "type": msg_type,
        "payload": payload,
    }
    if expires_at is not None:
        parse_time(expires_at, "--expires-at")
        message["expires_at"] = expires_at
    elif expires_in_s is not None:
        message["expires_at"] = format_time(now + dt.timedelta(seconds=expires_in_s))
    return sign_message(message, signing_key(seed), key_id)


def _seal_pairs(args):
    seals = args.seal or []
    keys = args.sealing_key or []
    if not seals:
        if keys:
            raise Failure("--sealing-key given without --seal", EXIT_USAGE)
        return []
    if len(keys) == 1:
        keys = keys * len(seals)
    if len(keys) != len(seals):
        raise Failure("give one --sealing-key for all --seal pointers, or one per --seal",
                      EXIT_USAGE)
    return list(zip(seals, keys))


def _command_from_args(args):
    return build_command(
        seed=args.seed, key_id=args.key_id, device_id=args.device_id, msg_type=args.type,
        payload=parse_json(args.payload, "--payload"),
        message_id=getattr(args, "message_id", None), timestamp=getattr(args, "timestamp", None),
        expires_in_s=getattr(args, "expires_in_s", None),
        expires_at=getattr(args, "expires_at", None), seals=_seal_pairs(args))


# ---------------------------------------------------------------------------------------------
# Subcommands


def cmd_sign(args):
    print(dumps(_command_from_args(args)))


def read_messages(text):
    """One message, a JSON array of messages, or one message per line."""
    if not text.strip():
        raise Failure("no input messages", EXIT_USAGE)
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        return [parse_json(line, f"line {n + 1}") for n, line in enumerate(lines)]
    return doc if isinstance(doc, list) else [doc]


def cmd_verify(args):
    if args.file and args.file != "-":
        with open(args.file, "rb") as f:
            raw = f.read()
    else:
        raw = sys.stdin.buffer.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Failure("input is not UTF-8", EXIT_USAGE) from None
    messages = read_messages(text)
    key = verify_key(args.public_key)
    for i, message in enumerate(messages):
        verify_message(message, key, index=i, key_id=args.key_id)
    print(dumps({"verified": len(messages)}))


def cmd_unseal(args):
    print(dumps({"secret": unseal(args.sealed, args.sealing_private_key)}))


def cmd_mqtt_command(args):
    try:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
    except ImportError as e:
        raise Failure(f"paho-mqtt >= 2 is needed ({e}); run scripts/setup.sh", EXIT_USAGE) from None

    device_key = verify_key(args.device_public_key)
    command = _command_from_args(args)
    base = f"{args.prefix.rstrip('/')}/devices/{args.device_id}"
    t_commands, t_replies, t_state = f"{base}/commands", f"{base}/replies", f"{base}/state"
    deadline = time.monotonic() + args.timeout_s
    events = queue.Queue()

    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"vistter-interop-{uuid.uuid4().hex[:16]}",
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.on_connect = lambda c, u, flags, rc, props: events.put(("connack", rc))
    client.on_subscribe = lambda c, u, mid, rcs, props: events.put(("suback", mid, rcs))
    client.on_message = lambda c, u, msg: events.put(("message", msg.topic, msg.payload,
                                                      msg.retain))
    client.on_disconnect = lambda c, u, flags, rc, props: events.put(("disconnect", rc))

    def next_event(waiting_for):
        try:
            event = events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise Timeout(f"timed out after {args.timeout_s:g} s waiting for {waiting_for}") \
                from None
        if event[0] == "disconnect":
            raise Failure(f"broker {args.host}:{args.port} closed the connection while waiting "
                          f"for {waiting_for}: {event[1]}", EXIT_TRANSPORT)
        return event

    replies, state, ignored, published = [], None, [], False
    try:
        client.connect(args.host, args.port, keepalive=30)
    except OSError as e:
        raise Failure(f"cannot connect to MQTT broker {args.host}:{args.port}: {e}",
                      EXIT_TRANSPORT) from None
    client.loop_start()
    try:
        pending = []  # messages that arrive before we look for them
        try:
            ev = next_event("CONNACK")
            while ev[0] != "connack":
                ev = next_event("CONNACK")
            if ev[1].is_failure:
                raise Failure(f"MQTT broker {args.host}:{args.port} refused the connection: "
                              f"{ev[1]}", EXIT_TRANSPORT)

            # Subscribe before publishing so no reply can be missed.
            topics = [(t_replies, 1)] + ([(t_state, 1)] if args.state else [])
            _, sub_mid = client.subscribe(topics)
            while True:
                ev = next_event("SUBACK")
                if ev[0] == "message":
                    pending.append(ev)
                elif ev[0] == "suback" and ev[1] == sub_mid:
                    break
            for (topic, _), rc in zip(topics, ev[2]):
                if rc.is_failure:
                    raise Failure(f"broker refused the subscription to {topic}: {rc}",
                                  EXIT_TRANSPORT)

            info = client.publish(t_commands, dumps(command).encode("utf-8"), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise Failure(f"publish to {t_commands} failed: {mqtt.error_string(info.rc)}",
                              EXIT_TRANSPORT)
            published = True

            def complete():
                kinds = {r.get("type") for r in replies}
                return "NACK" in kinds or {"ACK", "RESULT"} <= kinds

            while not (complete() and (state is not None or not args.state)):
                want = "the STATE message" if complete() else "the replies (ACK and RESULT, or NACK)"
                ev = pending.pop(0) if pending else next_event(want)
                if ev[0] != "message":
                    continue
                _, topic, payload, retain = ev
                what = f"message on {topic}"
                try:
                    message = json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates,
                                         parse_constant=_no_constant)
                except (UnicodeDecodeError, ValueError) as e:
                    raise Failure(f"{what} is not UTF-8 JSON: {e}") from None
                if not isinstance(message, dict):
                    raise Failure(f"{what} is not a JSON object")
                if topic == t_state:
                    if state is None and retain:
                        verify_message(message, device_key, label=f"retained message on {topic}")
                        if message.get("type") != "STATE":
                            raise Failure(f"retained message on {topic} has type "
                                          f"{message.get('type')!r}, expected 'STATE'")
                        state = message
                    continue
                if message.get("correlation_id") != command["message_id"]:
                    ignored.append(message)
                    continue
                who = describe(message, len(replies), "reply")
                verify_message(message, device_key, index=len(replies), label="reply")
                if message.get("device_id") != args.device_id:
                    raise Failure(f"{who} has device_id {message.get('device_id')!r}, "
                                  f"expected {args.device_id!r}")
                if message.get("type") not in REPLY_TYPES:
                    raise Failure(f"{who}: type is not one of {', '.join(REPLY_TYPES)}")
                replies.append(message)
        except Timeout as e:
            if not published:
                raise
            got = [r.get("type") for r in replies]
            note = f"; replies so far: {got}"
            if ignored:
                last = ignored[-1]
                note += (f"; {len(ignored)} other message(s) on {t_replies} ignored, last: "
                         f"type {last.get('type')!r}, correlation_id "
                         f"{last.get('correlation_id')!r}, payload {dumps(last.get('payload'))}")
            raise Timeout(f"{e} (command {command['message_id']} published to {t_commands}"
                          f"{note})") \
                from None
    finally:
        client.disconnect()
        client.loop_stop()

    out = {"command": command, "replies": replies}
    if args.state:
        out["state"] = state
    print(dumps(out))


def cmd_selftest(args):
    """Checks this implementation against the golden messages (see schemas/examples/README.md)."""
    d = args.examples
    with open(os.path.join(d, "test-keys.json"), "rb") as f:
        keys = parse_json(f.read().decode("utf-8"), "test-keys.json")
    studio, device = keys["studio"], keys["device"]

    def expect(cond, what):
        if not cond:
            raise Failure(f"selftest: {what}")

    # The published keys are consistent with their seeds.
    s_key, d_key = signing_key(studio["private_key_seed"]), signing_key(device["private_key_seed"])
    expect(b64encode(bytes(s_key.verify_key)) == studio["public_key"],
           "studio seed does not give the published studio public key")
    expect(b64encode(bytes(d_key.verify_key)) == device["device_public_key"],
           "device seed does not give the published device public key")
    sealing_priv = nacl.public.PrivateKey(b64decode(device["sealing_private_key"],
                                                    "sealing_private_key", 32))
    expect(b64encode(bytes(sealing_priv.public_key)) == device["device_sealing_key"],
           "device sealing private key does not give the published device_sealing_key")

    roles = {
        "studio": (s_key, studio["key_id"]),
        "device": (d_key, device["key_id"]),
    }
    seen, checked = {}, 0
    for name in sorted(os.listdir(d)):
        if not name.endswith(".json") or name == "test-keys.json":
            continue
        with open(os.path.join(d, name), "rb") as f:
            message = parse_json(f.read().decode("utf-8"), name)
        t = message.get("type") if isinstance(message, dict) else None
        if t in COMMAND_TYPES:
            role = "studio"
        elif t in DEVICE_TYPES:
            role = "device"
        else:
            raise Failure(f"selftest: {name}: unknown type {t!r}")
        expect(t not in seen, f"{name}: type {t} also in {seen.get(t)}")
        seen[t] = name
        key, key_id = roles[role]

        # Signature verifies with the public key, and re-signing gives the same bytes.
        verify_message(message, key.verify_key, key_id=key_id)
        again = sign_message(message, key, key_id)
        expect(again["signature"] == message["signature"],
               f"{name}: re-signed value {again['signature']['value']} differs from the golden "
               f"{message['signature'].get('value')}")

        # Envelope shape from the contract.
        expect(message.get("schema_version") == SCHEMA_VERSION, f"{name}: schema_version")
        expect(UUID_RE.match(str(message.get("message_id"))), f"{name}: message_id")
        parse_time(message.get("timestamp", ""), f"{name}: timestamp")
        if "expires_at" in message:
            parse_time(message["expires_at"], f"{name}: expires_at")
        expect(message.get("device_id") == device["device_id"], f"{name}: device_id")
        expect(isinstance(message.get("payload"), dict), f"{name}: payload is not an object")
        if role == "device":
            seq = message.get("seq")
            expect(isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0,
                   f"{name}: device message without an integer seq")
        else:
            expect("seq" not in message, f"{name}: command with a seq")
            expect(message.get("correlation_id") is None, f"{name}: command correlation_id")
        if t in REPLY_TYPES:
            expect(UUID_RE.match(str(message.get("correlation_id"))), f"{name}: correlation_id")
        if t == "STATE":
            p = message["payload"]
            expect(p.get("device_public_key") == device["device_public_key"]
                   and p.get("device_sealing_key") == device["device_sealing_key"],
                   f"{name}: keys in STATE differ from test-keys.json")

        # A one-bit change anywhere must break the signature.
        tampered = json.loads(json.dumps(message))
        tampered["payload"]["__tamper"] = True
        try:
            verify_message(tampered, key.verify_key)
        except Failure:
            pass
        else:
            raise Failure(f"selftest: {name}: a tampered copy still verifies")
        checked += 1

    missing = set(COMMAND_TYPES + DEVICE_TYPES) - set(seen)
    expect(not missing, f"no golden message for {sorted(missing)}")

    # README step by step: the exact canonical line and signature of ping.json.
    readme = os.path.join(d, "README.md")
    if os.path.exists(readme) and "PING" in seen:
        with open(os.path.join(d, seen["PING"]), "rb") as f:
            ping = parse_json(f.read().decode("utf-8"), seen["PING"])
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        line = signed_bytes(ping)[len(SIGNING_PREFIX):].decode("utf-8")
        expect(line in text, "README's canonical line for ping.json differs from ours")
        expect(ping["signature"]["value"] in text, "README's ping signature differs")
        # The sign subcommand's builder rebuilds ping.json exactly.
        rebuilt = build_command(
            seed=studio["private_key_seed"], key_id=studio["key_id"],
            device_id=ping["device_id"], msg_type="PING", payload={},
            message_id=ping["message_id"], timestamp=ping["timestamp"],
            expires_at=ping.get("expires_at"))
        expect(rebuilt == ping, "build_command does not rebuild ping.json")

    # Sealed secrets: seal to the device's sealing key, open with its private key.
    secret = "selftest stream key \u2713 " + uuid.uuid4().hex
    sealed = seal(secret, device["device_sealing_key"])
    expect(64 <= len(sealed) <= 4096, "sealed value length outside the schema's bounds")
    expect(unseal(sealed, device["sealing_private_key"]) == secret, "seal/unseal round trip")
    cfg = build_command(
        seed=studio["private_key_seed"], key_id=studio["key_id"], device_id=device["device_id"],
        msg_type="DEVICE_CONFIG",
        payload={"mode": "merge", "destinations": [
            {"id": "yt", "platform": "youtube", "stream_key": secret}]},
        expires_in_s=300, seals=[("/destinations/0/stream_key", device["device_sealing_key"])])
    verify_message(cfg, s_key.verify_key, key_id=studio["key_id"])
    opened = unseal(cfg["payload"]["destinations"][0]["stream_key"]["sealed"],
                    device["sealing_private_key"])
    expect(opened == secret, "--seal round trip")

    print(dumps({"ok": True, "checked": checked}))


# ---------------------------------------------------------------------------------------------
# Command line


def _add_command_args(p):
    p.add_argument("--seed", required=True, help="ed25519 private seed, base64 (32 bytes)")
    p.add_argument("--key-id", required=True, help="signature.key_id (the studio key's id)")
    p.add_argument("--device-id", required=True)
    p.add_argument("--type", required=True, help="command type, e.g. PING")
    p.add_argument("--payload", required=True, help="payload, a JSON object")
    p.add_argument("--seal", action="append", metavar="JSON_POINTER",
                   help="seal the string at this pointer inside the payload (repeatable)")
    p.add_argument("--sealing-key", action="append", metavar="B64",
                   help="device X25519 sealing public key, base64 (once, or once per --seal)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("sign", help="build and sign a command")
    _add_command_args(p)
    p.add_argument("--message-id")
    p.add_argument("--timestamp", help="RFC 3339 (default: now, UTC, milliseconds)")
    exp = p.add_mutually_exclusive_group()
    exp.add_argument("--expires-in-s", type=float, help="expires_at = timestamp + N seconds")
    exp.add_argument("--expires-at", help="expires_at, verbatim (RFC 3339)")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser("verify", help="verify message signatures")
    p.add_argument("--public-key", required=True, help="ed25519 public key, base64")
    p.add_argument("--key-id", help="also require signature.key_id to be this")
    p.add_argument("file", nargs="?", help="file (default: stdin)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("unseal", help="open a sealed box")
    p.add_argument("--sealing-private-key", required=True, help="X25519 private key, base64")
    p.add_argument("--sealed", required=True, help="the sealed value, base64")
    p.set_defaults(func=cmd_unseal)

    p = sub.add_parser("mqtt-command", help="send a signed command over MQTT, collect replies")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="vistter/v1", help="topic prefix")
    _add_command_args(p)
    p.add_argument("--device-public-key", required=True,
                   help="device ed25519 public key, base64 (verifies replies)")
    p.add_argument("--expires-in-s", type=float, help="expires_at = now + N seconds")
    p.add_argument("--timeout-s", type=float, default=20.0)
    p.add_argument("--state", action="store_true",
                   help="also return the retained STATE message (verified)")
    p.set_defaults(func=cmd_mqtt_command)

    p = sub.add_parser("selftest", help="check against the golden messages")
    p.add_argument("--examples", required=True, help="schemas/examples directory")
    p.set_defaults(func=cmd_selftest)

    args = ap.parse_args(argv)
    try:
        args.func(args)
    except Failure as e:
        print(f"vistter_interop {args.cmd}: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"vistter_interop {args.cmd}: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
