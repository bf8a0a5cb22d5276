#!/usr/bin/env python3
"""Validates tprof's Zipkin export against the published Zipkin v2 model.

Usage: validate_zipkin.py FILE...   (each line of each FILE: one JSON array of spans, the
body of POST /api/v2/spans)

No PyPI package ships the v2 JSON model in machine-readable form (py_zipkin and the
OpenTelemetry Zipkin exporters only ship zipkin.proto, the protobuf encoding, and no JSON v2
decoder), so the `definitions` of the published OpenAPI document
    https://github.com/openzipkin/zipkin-api/blob/master/zipkin2-api.yaml
(ListOfSpans, Span, Endpoint, Annotation, Tags; commit 962cc40bf72ea082c32e9c64506ac29f3267faeb)
are transcribed below as JSON Schema (Swagger 2.0 schema objects are a subset of JSON Schema
draft 4) and checked with the `jsonschema` package. Constraint for constraint: required
traceId and id; traceId 16..32 and parentId/id exactly 16 characters of [a-z0-9]; kind one of
CLIENT/SERVER/PRODUCER/CONSUMER; timestamp, duration (minimum 1) and annotation timestamps
integers; annotations unique, each requiring timestamp and value; tags a string->string map;
endpoint ipv4/ipv6 formats and an integer port.

STRICTER than the published model, and marked so below (`tprof:`), because the model's text
says so or because a typo would otherwise pass: no unknown field names (the model does not
forbid them, but Zipkin ignores them, so a misspelled `parentID` would silently lose the
parent), ids are lowercase hex ("16 or 32 lowercase hex characters") of exactly 16 or 32
digits and not all zeros, timestamps are epoch microseconds of 2000..2100 (catches ms/ns
unit mistakes), annotations fall inside their span, and a span is not its own parent.

Exit status: 0 valid, 1 invalid (each problem printed), 2 missing packages.
"""

import json
import sys

try:
    import jsonschema
except ImportError as e:  # never pass silently: the caller's test must fail
    sys.stderr.write(
        f"validate_zipkin.py: {e}: install the Python packages with `cargo xtask setup` "
        "(python3 -m pip install opentelemetry-proto protobuf jsonschema)\n"
    )
    sys.exit(2)

# --- zipkin2-api.yaml `definitions`, as JSON Schema -------------------------------------
ENDPOINT = {
    "type": "object",
    "properties": {
        "serviceName": {"type": "string"},
        "ipv4": {"type": "string", "format": "ipv4"},
        "ipv6": {"type": "string", "format": "ipv6"},
        "port": {"type": "integer"},
    },
    "additionalProperties": False,  # tprof: stricter
}
ANNOTATION = {
    "type": "object",
    "required": ["timestamp", "value"],
    "properties": {"timestamp": {"type": "integer"}, "value": {"type": "string"}},
    "additionalProperties": False,  # tprof: stricter
}
TAGS = {"type": "object", "additionalProperties": {"type": "string"}}
SPAN = {
    "type": "object",
    "required": ["traceId", "id"],
    "properties": {
        "traceId": {"type": "string", "maxLength": 32, "minLength": 16, "pattern": "[a-z0-9]{16,32}"},
        "name": {"type": "string"},
        "parentId": {"type": "string", "pattern": "[a-z0-9]{16}", "maxLength": 16, "minLength": 16},
        "id": {"type": "string", "pattern": "[a-z0-9]{16}", "maxLength": 16, "minLength": 16},
        "kind": {"type": "string", "enum": ["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]},
        "timestamp": {"type": "integer"},  # format: int64
        "duration": {"type": "integer", "minimum": 1},  # format: int64
        "debug": {"type": "boolean"},
        "shared": {"type": "boolean"},
        "localEndpoint": {"$ref": "#/definitions/Endpoint"},
        "remoteEndpoint": {"$ref": "#/definitions/Endpoint"},
        "annotations": {"type": "array", "uniqueItems": True, "items": {"$ref": "#/definitions/Annotation"}},
        "tags": {"$ref": "#/definitions/Tags"},
    },
    "additionalProperties": False,  # tprof: stricter
}
LIST_OF_SPANS = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "array",
    "items": {"$ref": "#/definitions/Span"},
    "definitions": {"Endpoint": ENDPOINT, "Annotation": ANNOTATION, "Tags": TAGS, "Span": SPAN},
}
# -----------------------------------------------------------------------------------------

MIN_US, MAX_US = 946684800 * 10**6, 4102444800 * 10**6  # 2000-01-01 .. 2100-01-01


def lower_hex(s, lengths):
    return isinstance(s, str) and len(s) in lengths and all(c in "0123456789abcdef" for c in s) and s.strip("0") != ""


def semantic(span, where, errors):
    """tprof: checks stricter than the published model (see the module docstring)."""
    if not lower_hex(span.get("traceId"), (16, 32)):
        errors.append(f"{where}: traceId {span.get('traceId')!r} is not 16 or 32 lowercase hex digits, non-zero")
    for key in ("id", "parentId"):
        if key in span and not lower_hex(span[key], (16,)):
            errors.append(f"{where}: {key} {span[key]!r} is not 16 lowercase hex digits, non-zero")
    if "parentId" in span and span.get("parentId") == span.get("id"):
        errors.append(f"{where}: span is its own parent")
    ts, dur = span.get("timestamp"), span.get("duration")
    if isinstance(ts, int) and not MIN_US <= ts <= MAX_US:
        errors.append(f"{where}: timestamp {ts} is not epoch microseconds of 2000..2100")
    if isinstance(ts, int) and isinstance(dur, int):
        for i, a in enumerate(span.get("annotations", [])):
            t = a.get("timestamp")
            if isinstance(t, int) and not ts <= t <= ts + dur:
                errors.append(f"{where}.annotations[{i}]: timestamp {t} outside the span {ts}..{ts + dur}")


def main(paths):
    validator = jsonschema.Draft4Validator(LIST_OF_SPANS, format_checker=jsonschema.FormatChecker())
    errors, batches, spans = [], 0, 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().split("\n") if line.strip()]
        if not lines:
            errors.append(f"{path}: no batches")
        for n, line in enumerate(lines, 1):
            where = f"{path}:{n}"
            try:
                doc = json.loads(line)
            except ValueError as e:
                errors.append(f"{where}: not JSON: {e}")
                continue
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
                errors.append(f"{where}: ${loc}: {e.message}")
            if not isinstance(doc, list):
                continue
            batches += 1
            for i, span in enumerate(doc):
                if isinstance(span, dict):
                    spans += 1
                    semantic(span, f"{where}: $[{i}] {span.get('name')!r}", errors)
    for e in errors:
        print(e)
    if errors:
        print(f"INVALID: {len(errors)} problems")
        return 1
    print(f"ok: {batches} ListOfSpans, {spans} spans")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
