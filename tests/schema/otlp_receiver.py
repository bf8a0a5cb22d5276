#!/usr/bin/env python3
"""A tiny OTLP/HTTP receiver for the end-to-end tests, and a decoder of what it received.

  otlp_receiver.py serve OUT [--cert CERT --key KEY]
      Listens on 127.0.0.1 (a free port; prints `listening PORT`), over TLS with CERT/KEY.
      Appends each POST to OUT as one JSON line {path, headers, body (base64)} and answers
      200 with an empty ExportTraceServiceResponse (in the request's encoding). Stops on
      SIGTERM or when its standard input closes.

  otlp_receiver.py decode OUT
      Decodes every request of OUT with the official OpenTelemetry protos (PyPI:
      opentelemetry-proto): gunzipped when Content-Encoding says gzip, protobuf when the
      Content-Type is application/x-protobuf, else OTLP/JSON (hex ids, rejecting unknown
      fields). Prints one JSON line per request: {path, headers, encoding, spans}, each span
      {trace_id, span_id, parent_span_id (hex), name, kind, start, end, resource (string
      and int attributes), attributes, events (names)}. Exit 1 when a body does not decode.
"""

import base64
import gzip
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def serve(out, cert=None, key=None):
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            rec = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                   "body": base64.b64encode(body).decode()}
            with lock, open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            proto = "protobuf" in self.headers.get("Content-Type", "")
            reply = b"" if proto else b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf" if proto else "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(f"listening {srv.server_address[1]}", flush=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the test closes our stdin (or dies)
    srv.shutdown()


def hexid(b):
    return b.hex()


def value(v):
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    return None


def decode(out):
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from validate_otlp import normalize

    ok = True
    for line in open(out):
        rec = json.loads(line)
        body = base64.b64decode(rec["body"])
        headers = rec["headers"]
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        if "protobuf" in headers.get("content-type", ""):
            encoding = "protobuf"
            req.ParseFromString(body)
        else:
            encoding = "json"
            errors = []
            doc = normalize(json.loads(body), "$", errors)
            if errors:
                print("\n".join(errors), file=sys.stderr)
                ok = False
            json_format.ParseDict(doc, req, ignore_unknown_fields=False)
        spans = []
        for rs in req.resource_spans:
            res = {kv.key: value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append({
                        "trace_id": hexid(s.trace_id), "span_id": hexid(s.span_id),
                        "parent_span_id": hexid(s.parent_span_id), "name": s.name, "kind": s.kind,
                        "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                        "scope": ss.scope.name, "resource": res,
                        "attributes": {kv.key: value(kv.value) for kv in s.attributes},
                        "events": [e.name for e in s.events],
                    })
        print(json.dumps({"path": rec["path"], "headers": headers, "encoding": encoding, "spans": spans}))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        args = sys.argv[3:]
        cert = args[args.index("--cert") + 1] if "--cert" in args else None
        key = args[args.index("--key") + 1] if "--key" in args else None
        serve(sys.argv[2], cert, key)
    elif len(sys.argv) == 3 and sys.argv[1] == "decode":
        try:
            sys.exit(decode(sys.argv[2]))
        except ImportError as e:
            sys.stderr.write(f"otlp_receiver.py: {e}: install opentelemetry-proto (cargo xtask setup)\n")
            sys.exit(2)
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
