#!/usr/bin/env python3
"""Validates tprof's OTLP/JSON export against the official OpenTelemetry protobuf schema.

Usage: validate_otlp.py FILE...   (each line of each FILE: one ExportTraceServiceRequest)

Each line is parsed with google.protobuf.json_format into the official
opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest (PyPI: opentelemetry-proto),
rejecting unknown fields, after applying the OTLP/JSON rules the protobuf JSON mapping does not
know (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding):
  * traceId / spanId / parentSpanId are hex strings, not base64 (converted here for Parse);
  * enum values are integers, not names;
  * field names are lowerCamelCase (json_format would also accept the proto names).
Then the messages are checked for what the schema cannot say: id lengths and non-zero ids,
non-zero times with end >= start, events inside their span, unique attribute keys, a
service.name on every resource, and region spans (tprof.region.depth) nested in a parent
span of the same request and trace.

Exit status: 0 valid, 1 invalid (each problem printed), 2 missing packages.
"""

import base64
import json
import re
import sys

try:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
except ImportError as e:  # never pass silently: the caller's test must fail
    sys.stderr.write(
        f"validate_otlp.py: {e}: install the Python packages with `cargo xtask setup` "
        "(python3 -m pip install opentelemetry-proto protobuf jsonschema)\n"
    )
    sys.exit(2)

HEX = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
ENUMS = {"kind", "code"}  # Span.kind, Status.code


def normalize(node, path, errors):
    """Checks OTLP/JSON-only rules and converts hex ids to base64 for json_format."""
    if isinstance(node, list):
        return [normalize(x, f"{path}[{i}]", errors) for i, x in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        where = f"{path}.{key}"
        if not CAMEL.match(key):
            errors.append(f"{where}: field name is not lowerCamelCase")
        if key in HEX:
            want = HEX[key]
            if not isinstance(value, str) or not re.fullmatch(f"[0-9a-f]{{{want}}}", value):
                if not (key == "parentSpanId" and value == ""):
                    errors.append(f"{where}: {value!r} is not {want} lowercase hex digits")
                    continue
            out[key] = base64.b64encode(bytes.fromhex(value)).decode()
            continue
        if key in ENUMS and not isinstance(value, int):
            errors.append(f"{where}: enum {value!r} must be an integer in OTLP/JSON")
        out[key] = normalize(value, where, errors)
    return out


def attr(attrs, key):
    for kv in attrs:
        if kv.key == key:
            return kv.value
    return None


def check_attrs(attrs, where, errors):
    keys = [kv.key for kv in attrs]
    if len(keys) != len(set(keys)):
        errors.append(f"{where}: duplicate attribute keys {sorted(keys)}")
    for kv in attrs:
        if not kv.key:
            errors.append(f"{where}: empty attribute key")
        if kv.value.WhichOneof("value") is None:
            errors.append(f"{where}: attribute {kv.key!r} has no value")


def check_request(req, where, errors):
    spans = 0
    for ri, rs in enumerate(req.resource_spans):
        rw = f"{where}.resourceSpans[{ri}]"
        check_attrs(rs.resource.attributes, f"{rw}.resource", errors)
        svc = attr(rs.resource.attributes, "service.name")
        if svc is None or not svc.string_value:
            errors.append(f"{rw}: resource without a string service.name")
        if not rs.scope_spans:
            errors.append(f"{rw}: no scopeSpans")
        for si, ss in enumerate(rs.scope_spans):
            if not ss.scope.name:
                errors.append(f"{rw}.scopeSpans[{si}]: scope without a name")
            by_id = {(s.trace_id, s.span_id): s for s in ss.spans}
            if len(by_id) != len(ss.spans):
                errors.append(f"{rw}.scopeSpans[{si}]: repeated (traceId, spanId)")
            for pi, s in enumerate(ss.spans):
                spans += 1
                sw = f"{rw}.scopeSpans[{si}].spans[{pi}] {s.name!r}"
                if len(s.trace_id) != 16 or not any(s.trace_id):
                    errors.append(f"{sw}: traceId must be 16 non-zero bytes")
                if len(s.span_id) != 8 or not any(s.span_id):
                    errors.append(f"{sw}: spanId must be 8 non-zero bytes")
                if s.parent_span_id and (len(s.parent_span_id) != 8 or not any(s.parent_span_id)):
                    errors.append(f"{sw}: parentSpanId must be empty or 8 non-zero bytes")
                if s.parent_span_id == s.span_id:
                    errors.append(f"{sw}: span is its own parent")
                if not s.name:
                    errors.append(f"{sw}: empty name")
                if s.start_time_unix_nano == 0 or s.end_time_unix_nano < s.start_time_unix_nano:
                    errors.append(f"{sw}: times {s.start_time_unix_nano}..{s.end_time_unix_nano}")
                if not 946684800 * 10**9 < s.start_time_unix_nano < 4102444800 * 10**9:
                    errors.append(f"{sw}: start {s.start_time_unix_nano} is not Unix-epoch ns of 2000..2100")
                check_attrs(s.attributes, sw, errors)
                for ei, e in enumerate(s.events):
                    ew = f"{sw}.events[{ei}] {e.name!r}"
                    check_attrs(e.attributes, ew, errors)
                    if not s.start_time_unix_nano <= e.time_unix_nano <= s.end_time_unix_nano:
                        errors.append(f"{ew}: time {e.time_unix_nano} outside the span")
                for li, link in enumerate(s.links):
                    if len(link.trace_id) != 16 or len(link.span_id) != 8:
                        errors.append(f"{sw}.links[{li}]: bad ids")
                if attr(s.attributes, "tprof.region.depth") is not None:
                    parent = by_id.get((s.trace_id, s.parent_span_id))
                    if parent is None:
                        errors.append(f"{sw}: region span whose parent is not in the request")
                    elif not (parent.start_time_unix_nano <= s.start_time_unix_nano
                              and s.end_time_unix_nano <= parent.end_time_unix_nano):
                        errors.append(f"{sw}: region span outside its parent {parent.name!r}")
    return spans


def main(paths):
    errors, requests, spans = [], 0, 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().split("\n") if line.strip()]
        if not lines:
            errors.append(f"{path}: no requests")
        for n, line in enumerate(lines, 1):
            where = f"{path}:{n}"
            try:
                doc = json.loads(line)
            except ValueError as e:
                errors.append(f"{where}: not JSON: {e}")
                continue
            before = len(errors)
            converted = normalize(doc, "$", errors)
            if len(errors) > before:
                errors[before:] = [f"{where}: {e}" for e in errors[before:]]
                continue
            req = ExportTraceServiceRequest()
            try:
                json_format.Parse(json.dumps(converted), req, ignore_unknown_fields=False)
            except json_format.ParseError as e:
                errors.append(f"{where}: does not parse as ExportTraceServiceRequest: {e}")
                continue
            requests += 1
            spans += check_request(req, f"{where}: $", errors)
    for e in errors:
        print(e)
    if errors:
        print(f"INVALID: {len(errors)} problems")
        return 1
    print(f"ok: {requests} ExportTraceServiceRequest, {spans} spans")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))
