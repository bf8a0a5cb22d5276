//! A minimal protobuf writer for the Perfetto trace format: varints, fixed64 and
//! length-delimited fields, enough for `Trace`/`TracePacket`/`TrackEvent`. Field numbers are
//! those of the published protos (google/perfetto `protos/perfetto/trace/...`), named in
//! [`field`] with the file each comes from.

/// One message being built (its fields, without its own tag or length).
#[derive(Clone, Debug, Default)]
pub struct Msg(pub Vec<u8>);

/// Appends `v` as a base-128 varint.
pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

impl Msg {
    pub fn new() -> Self {
        Msg(Vec::new())
    }

    fn tag(&mut self, field: u32, wire: u32) {
        put_varint(&mut self.0, u64::from((field << 3) | wire));
    }

    /// uint32/uint64/int32/enum/bool fields; negative int64s go as their two's complement.
    pub fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.tag(field, VARINT);
        put_varint(&mut self.0, v);
        self
    }

    pub fn fixed64(&mut self, field: u32, v: u64) -> &mut Self {
        self.tag(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.tag(field, LEN);
        put_varint(&mut self.0, b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    pub fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// Field numbers and enum values, from the published protos.
#[allow(dead_code)]
pub mod field {
    /// trace.proto: `message Trace { repeated TracePacket packet = 1; }`
    pub const TRACE_PACKET: u32 = 1;

    // trace_packet.proto: TracePacket.
    pub const PKT_TIMESTAMP: u32 = 8; // uint64
    pub const PKT_TIMESTAMP_CLOCK_ID: u32 = 58; // uint32
    pub const PKT_CLOCK_SNAPSHOT: u32 = 6; // ClockSnapshot
    pub const PKT_TRUSTED_SEQUENCE_ID: u32 = 10; // uint32 trusted_packet_sequence_id
    pub const PKT_TRACK_EVENT: u32 = 11; // TrackEvent
    pub const PKT_SEQUENCE_FLAGS: u32 = 13; // uint32
    pub const PKT_TRACK_DESCRIPTOR: u32 = 60; // TrackDescriptor
    pub const PKT_FIRST_PACKET_ON_SEQUENCE: u32 = 87; // bool
    /// TracePacket.SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;

    // clock_snapshot.proto: ClockSnapshot { repeated Clock clocks = 1; primary_trace_clock = 2 }
    // Clock { uint32 clock_id = 1; uint64 timestamp = 2; }
    pub const SNAP_CLOCKS: u32 = 1;
    pub const SNAP_PRIMARY_TRACE_CLOCK: u32 = 2;
    pub const CLOCK_ID: u32 = 1;
    pub const CLOCK_TIMESTAMP: u32 = 2;
    /// builtin_clock.proto: BUILTIN_CLOCK_MONOTONIC = 3, BUILTIN_CLOCK_BOOTTIME = 6.
    pub const BUILTIN_CLOCK_MONOTONIC: u64 = 3;
    pub const BUILTIN_CLOCK_BOOTTIME: u64 = 6;

    // track_event/track_descriptor.proto: TrackDescriptor.
    pub const TD_UUID: u32 = 1; // uint64
    pub const TD_NAME: u32 = 2; // string
    pub const TD_PROCESS: u32 = 3; // ProcessDescriptor
    pub const TD_THREAD: u32 = 4; // ThreadDescriptor
    pub const TD_PARENT_UUID: u32 = 5; // uint64
    pub const TD_CHILD_ORDERING: u32 = 11; // ChildTracksOrdering
    pub const TD_DESCRIPTION: u32 = 14; // string
    pub const TD_SIBLING_MERGE_BEHAVIOR: u32 = 15; // SiblingMergeBehavior
    /// TrackDescriptor.SiblingMergeBehavior.SIBLING_MERGE_BEHAVIOR_NONE: never merge this
    /// track with same-named siblings.
    pub const SIBLING_MERGE_BEHAVIOR_NONE: u64 = 2;
    /// TrackDescriptor.ChildTracksOrdering.CHRONOLOGICAL
    pub const CHILD_ORDERING_CHRONOLOGICAL: u64 = 2;

    // track_event/process_descriptor.proto: ProcessDescriptor { int32 pid = 1; string process_name = 6; }
    pub const PD_PID: u32 = 1;
    pub const PD_PROCESS_NAME: u32 = 6;
    // track_event/thread_descriptor.proto: ThreadDescriptor { int32 pid = 1; int64 tid = 2; string thread_name = 5; }
    pub const THD_PID: u32 = 1;
    pub const THD_TID: u32 = 2;
    pub const THD_THREAD_NAME: u32 = 5;

    // track_event/track_event.proto: TrackEvent.
    pub const TE_DEBUG_ANNOTATIONS: u32 = 4; // repeated DebugAnnotation
    pub const TE_TYPE: u32 = 9; // Type
    pub const TE_TRACK_UUID: u32 = 11; // uint64
    pub const TE_CATEGORIES: u32 = 22; // repeated string
    pub const TE_NAME: u32 = 23; // string
    pub const TE_FLOW_IDS: u32 = 47; // repeated fixed64
    pub const TE_TERMINATING_FLOW_IDS: u32 = 48; // repeated fixed64
    /// TrackEvent.Type
    pub const TYPE_SLICE_BEGIN: u64 = 1;
    pub const TYPE_SLICE_END: u64 = 2;
    pub const TYPE_INSTANT: u64 = 3;

    // track_event/debug_annotation.proto: DebugAnnotation.
    pub const DA_NAME: u32 = 10; // string
    pub const DA_BOOL_VALUE: u32 = 2;
    pub const DA_UINT_VALUE: u32 = 3; // uint64
    pub const DA_INT_VALUE: u32 = 4; // int64
    pub const DA_STRING_VALUE: u32 = 6; // string
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_wire_format() {
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut m = Msg::new();
        m.varint(1, 150).str(2, "hi").fixed64(47, 1);
        assert_eq!(&m.0[..5], &[0x08, 0x96, 0x01, 0x12, 0x02]);
        // field 47, wire type 1: (47 << 3) | 1 = 377 = 0xf9 0x02.
        assert_eq!(&m.0[7..9], &[0xf9, 0x02]);
        let mut neg = Msg::new();
        neg.varint(4, -1i64 as u64);
        assert_eq!(neg.0.len(), 11);
    }
}
