#!/usr/bin/env python3
"""Validates a tprof Perfetto trace against Perfetto's published protos.

Usage: validate_perfetto.py TRACE [--expect-name NAME]... [--expect-track NAME]...
                            [--min-flows N]

Decodes TRACE with `perfetto_trace_pb2` from the `perfetto` PyPI package (the generated
module of protos/perfetto/trace/perfetto_trace.proto), then checks what a protobuf parse
alone would let through:
  - no unknown fields anywhere (a wrong field number or wire type would hide there);
  - one packet sequence, whose first packet clears incremental state; a ClockSnapshot
    relating every timestamp_clock_id used;
  - every packet is a TrackDescriptor, or has a timestamp and a ClockSnapshot/TrackEvent;
  - TrackDescriptors: unique uuids, parents declared, process/thread descriptors with
    pid/tid, custom tracks named;
  - TrackEvents: track_uuid declared, type BEGIN/END/INSTANT, BEGIN/INSTANT named, time
    non-decreasing per track, SLICE_BEGIN/END balanced per track (never below zero, zero at
    the end), debug annotations named and valued;
  - flows: each id leaves exactly one event (flow_ids) and ends at exactly one later-or-equal
    event (terminating_flow_ids) on another track;
  - the expected slice/instant names and track names are present, and at least N flows.
Prints a summary line on success (exit 0); prints what is wrong on failure (exit 1);
exit 2 when the Python protobuf/perfetto packages are missing.
"""

import argparse
import collections
import sys

try:
    from google.protobuf import unknown_fields
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
except ImportError as e:  # pragma: no cover - environment problem, not a trace problem
    print(
        f"validate_perfetto: cannot import the Perfetto protos ({e}); run `cargo xtask setup` "
        "(it pip-installs the `perfetto` and `protobuf` packages)",
        file=sys.stderr,
    )
    sys.exit(2)

TE = pb.TrackEvent
BEGIN, END, INSTANT = TE.TYPE_SLICE_BEGIN, TE.TYPE_SLICE_END, TE.TYPE_INSTANT
BOOTTIME = pb.BUILTIN_CLOCK_BOOTTIME


def unknown(msg, path, errors):
    """Reports unknown fields in msg and every nested message."""
    ufs = unknown_fields.UnknownFieldSet(msg)
    if len(ufs):
        nums = sorted({u.field_number for u in ufs})
        errors.append(f"{path} ({msg.DESCRIPTOR.full_name}): unknown fields {nums}")
    for fd, value in msg.ListFields():
        if fd.message_type is None:
            continue
        items = value if fd.is_repeated else [value]
        for i, m in enumerate(items):
            if hasattr(m, "ListFields"):
                unknown(m, f"{path}.{fd.name}[{i}]", errors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--expect-name", action="append", default=[])
    ap.add_argument("--expect-track", action="append", default=[])
    ap.add_argument("--min-flows", type=int, default=0)
    a = ap.parse_args()

    with open(a.trace, "rb") as fh:
        data = fh.read()
    trace = pb.Trace()
    trace.ParseFromString(data)
    errors = []
    if trace.ByteSize() != len(data):
        errors.append(f"re-encoded size {trace.ByteSize()} != file size {len(data)}")
    packets = list(trace.packet)
    if not packets:
        errors.append("no packets")

    tracks = {}  # uuid -> TrackDescriptor
    clocks_used = set()
    snapshot_clocks = set()
    seqs = set()
    for i, p in enumerate(packets):
        unknown(p, f"packet[{i}]", errors)
        seqs.add(p.trusted_packet_sequence_id)
        kind = p.WhichOneof("data")
        if kind == "track_descriptor":
            td = p.track_descriptor
            if td.uuid in tracks:
                errors.append(f"packet[{i}]: track uuid {td.uuid} declared twice")
            tracks[td.uuid] = td
        elif kind in ("track_event", "clock_snapshot"):
            if not p.HasField("timestamp"):
                errors.append(f"packet[{i}]: {kind} without timestamp")
            if kind == "clock_snapshot":
                snapshot_clocks |= {c.clock_id for c in p.clock_snapshot.clocks}
            else:
                clocks_used.add(p.timestamp_clock_id if p.HasField("timestamp_clock_id") else BOOTTIME)
        else:
            errors.append(f"packet[{i}]: unexpected packet kind {kind}")
    if len(seqs) != 1 or 0 in seqs:
        errors.append(f"expected one non-zero trusted_packet_sequence_id, got {sorted(seqs)}")
    if packets and not packets[0].sequence_flags & pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED:
        errors.append("first packet does not set SEQ_INCREMENTAL_STATE_CLEARED")
    if clocks_used - {BOOTTIME} and not clocks_used | {BOOTTIME} <= snapshot_clocks:
        errors.append(f"clocks {sorted(clocks_used)} used but the ClockSnapshot has {sorted(snapshot_clocks)}")

    kinds = collections.Counter()
    for uuid, td in tracks.items():
        if td.HasField("parent_uuid") and td.parent_uuid not in tracks:
            errors.append(f"track {uuid}: parent {td.parent_uuid} not declared")
        if td.HasField("thread"):
            kinds["thread"] += 1
            if not (td.thread.HasField("pid") and td.thread.HasField("tid")):
                errors.append(f"track {uuid}: thread descriptor without pid/tid")
        elif td.HasField("process"):
            kinds["process"] += 1
            if not td.process.HasField("pid"):
                errors.append(f"track {uuid}: process descriptor without pid")
        else:
            kinds["custom"] += 1
            if not td.name:
                errors.append(f"track {uuid}: custom track without a name")

    depth = collections.defaultdict(int)
    last_ts = {}
    names = collections.Counter()
    flow_out, flow_in = {}, {}
    slices = instants = 0
    for i, p in enumerate(packets):
        if not p.HasField("track_event"):
            continue
        te, ts = p.track_event, p.timestamp
        where = f"packet[{i}] ts {ts}"
        if te.track_uuid not in tracks:
            errors.append(f"{where}: track_uuid {te.track_uuid} not declared")
        if ts < last_ts.get(te.track_uuid, 0):
            errors.append(f"{where}: time goes back on track {te.track_uuid}")
        last_ts[te.track_uuid] = ts
        if te.type in (BEGIN, INSTANT):
            if not te.name:
                errors.append(f"{where}: unnamed event")
            names[te.name] += 1
            for d in te.debug_annotations:
                if not d.name or d.WhichOneof("value") is None:
                    errors.append(f"{where}: debug annotation without name or value")
        if te.type == BEGIN:
            depth[te.track_uuid] += 1
            slices += 1
        elif te.type == END:
            depth[te.track_uuid] -= 1
            if depth[te.track_uuid] < 0:
                errors.append(f"{where}: SLICE_END without SLICE_BEGIN on track {te.track_uuid}")
        elif te.type == INSTANT:
            instants += 1
        else:
            errors.append(f"{where}: unexpected TrackEvent type {te.type}")
        for fid in te.flow_ids:
            if fid in flow_out:
                errors.append(f"{where}: flow {fid} starts twice")
            flow_out[fid] = (ts, te.track_uuid)
        for fid in te.terminating_flow_ids:
            if fid in flow_in:
                errors.append(f"{where}: flow {fid} ends twice")
            flow_in[fid] = (ts, te.track_uuid)
    for uuid, d in depth.items():
        if d != 0:
            errors.append(f"track {uuid}: {d} slices left open")
    for fid in set(flow_out) | set(flow_in):
        if fid not in flow_out or fid not in flow_in:
            errors.append(f"flow {fid}: {'no start' if fid not in flow_out else 'no end'}")
        elif flow_in[fid][0] < flow_out[fid][0] or flow_in[fid][1] == flow_out[fid][1]:
            errors.append(f"flow {fid}: ends before it starts, or on its own track")
    flows = len(set(flow_out) & set(flow_in))

    for n in a.expect_name:
        if n not in names:
            errors.append(f"no slice or instant named {n!r}")
    track_names = {td.name for td in tracks.values()} | {
        td.thread.thread_name for td in tracks.values() if td.HasField("thread")
    } | {td.process.process_name for td in tracks.values() if td.HasField("process")}
    for n in a.expect_track:
        if n not in track_names:
            errors.append(f"no track named {n!r} (have {sorted(track_names)})")
    if flows < a.min_flows:
        errors.append(f"{flows} flows, expected at least {a.min_flows}")

    if errors:
        for e in errors[:50]:
            print(f"validate_perfetto: {e}", file=sys.stderr)
        print(f"validate_perfetto: {len(errors)} problem(s) in {a.trace}", file=sys.stderr)
        return 1
    print(
        f"perfetto ok: {len(packets)} packets, tracks {dict(sorted(kinds.items()))}, "
        f"{slices} slices, {instants} instants, {flows} flows, {len(names)} distinct names"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
