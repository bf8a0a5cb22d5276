extern crate std;
use std::vec::Vec;

use super::*;

#[test]
fn probes_are_those_of_abi_v1() {
    let table: Vec<(u32, &str, usize, bool)> = probe::ALL.iter().map(|p| (p.id, p.name, p.nargs(), p.passes_strings())).collect();
    assert_eq!(
        table,
        [
            (1, "task_begin", 6, true),
            (2, "task_end", 3, false),
            (3, "region_begin", 2, true),
            (4, "region_end", 2, true),
            (5, "log", 4, true),
            (6, "task_attach", 4, false),
            (7, "task_detach", 3, false),
        ]
    );
    assert_eq!(probe::PROVIDER, "tprof");
    let ids = [probe::TASK_BEGIN, probe::TASK_END, probe::REGION_BEGIN, probe::REGION_END, probe::LOG, probe::TASK_ATTACH, probe::TASK_DETACH];
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn lookups() {
    assert_eq!(ProbeDef::by_name("task_attach").map(|p| p.id), Some(probe::TASK_ATTACH));
    assert_eq!(ProbeDef::by_name("Task_Begin"), None);
    assert_eq!(ProbeDef::by_name(""), None);
    assert_eq!(ProbeDef::by_id(probe::LOG).map(|p| p.name), Some("log"));
    assert_eq!(ProbeDef::by_id(0), None);
    assert_eq!(ProbeDef::by_id(kind::ON_CPU), None);
    assert_eq!(ProbeDef::of(probe::TASK_BEGIN).arg_slot("name"), 4);
    assert_eq!(ProbeDef::of(probe::LOG).arg_slot("value"), 2);
    assert_eq!(programs::usdt_for(probe::TASK_BEGIN), programs::USDT);
    assert_eq!(programs::usdt_for(probe::TASK_DETACH), programs::USDT_FAST);
    assert_eq!(programs::usdt_for(99), programs::USDT_FAST);
}

#[test]
fn kinds() {
    assert_eq!(kind::MAX, 14);
    assert_eq!(
        kind::NAMES,
        [
            "unknown", "task_begin", "task_end", "region_begin", "region_end", "log", "task_attach", "task_detach", "on_cpu",
            "off_cpu", "syscall", "agg", "kstack", "ustack", "proc",
        ]
    );
    assert_eq!([kind::ON_CPU, kind::OFF_CPU, kind::SYSCALL, kind::AGG, kind::KSTACK, kind::USTACK, kind::PROC], [8, 9, 10, 11, 12, 13, 14]);
    assert_eq!(kind::TASK_END, probe::TASK_END);
    assert_eq!(kind::name(kind::AGG), "agg");
    assert_eq!(kind::name(99), "unknown");
    assert_eq!(kind::by_name("kstack"), Some(kind::KSTACK));
    assert_eq!(kind::by_name("nope"), None);
}

#[test]
fn str_eq_compares_bytes() {
    assert!(str_eq("log", "log"));
    assert!(!str_eq("log", "logs"));
    assert!(!str_eq("log", "lag"));
}
