//! A mapping rule and a probe site -> the site's kernel spec ([`UsdtSpec`] with actions).
//! The note arguments the actions use are fetched into the slots the actions name (at most
//! [`MAX_USDT_ARGS`] values per site, whatever the probe's argument count). Refused, with a
//! message naming the probe, the site and the mapping's line: an argument index beyond the
//! probe's arguments, an argument the note spec cannot express, a string read from an
//! argument that is not a pointer (narrower than 8 bytes, or a constant).

use profiler_common::{arg, foreign, probe, ForeignAction, UsdtArg, UsdtSpec, FOREIGN_TEXT_LEN, MAX_USDT_ARGS};

use super::{Event, ProbeMapping, Rule, Value};
use crate::discover::ProbeSite;

/// The kernel spec of `site` under `rule`.
pub fn compile_site(rule: &Rule, site: &ProbeSite) -> Result<UsdtSpec, String> {
    let mut spec = UsdtSpec::default();
    let mut slots: Vec<UsdtArg> = Vec::new();
    let at = |line: usize| format!("{} (mapping line {line})", site.full_name());
    for (i, a) in rule.actions.iter().enumerate() {
        let mut take = |idx: usize, pointer: bool| -> Result<u8, String> {
            let n = site.each.len();
            let Some(parsed) = site.each.get(idx) else {
                return Err(format!("{}: arg{idx} is out of range: the probe has {n} argument{}", at(a.line), if n == 1 { "" } else { "s" }));
            };
            let got = parsed.as_ref().map_err(|e| format!("{}: arg{idx}: {e}", at(a.line)))?;
            if pointer && (got.size != 8 || got.kind == arg::CONST) {
                let what = if got.kind == arg::CONST { "a constant".to_string() } else { format!("a {}-byte value", got.size) };
                return Err(format!("{}: arg{idx} ({}) is {what}, not a pointer: it cannot hold a string", at(a.line), arg_text(site, idx)));
            }
            if slots.len() >= MAX_USDT_ARGS {
                return Err(format!("{}: the events of one probe use more than {MAX_USDT_ARGS} argument values", at(a.line)));
            }
            slots.push(*got);
            Ok((slots.len() - 1) as u8)
        };
        let (form, arg, arg2) = match &a.value {
            Value::None => (foreign::NONE, 0, 0),
            Value::CStr(p) => (foreign::CSTR, take(*p, true)?, 0),
            Value::Str(p, l) => {
                let p = take(*p, true)?;
                (foreign::STR, p, take(*l, false)?)
            }
            Value::Ints(list) => {
                let mut first = None;
                for idx in list {
                    let s = take(*idx, false)?;
                    first.get_or_insert(s);
                }
                (foreign::INTS, first.unwrap_or(0), list.len() as u8)
            }
        };
        let mut text = [0u8; FOREIGN_TEXT_LEN];
        let n = a.text.len().min(FOREIGN_TEXT_LEN);
        text[..n].copy_from_slice(&a.text.as_bytes()[..n]);
        spec.actions[i] = ForeignAction { event: event_id(a.event) as u8, form, arg, arg2, flags: a.flags, text_len: n as u8, _pad: [0; 2], text };
    }
    spec.nactions = rule.actions.len() as u32;
    spec.nargs = slots.len() as u32;
    spec.args[..slots.len()].copy_from_slice(&slots);
    // The program: the sleepable one unless the site only ends tasks (which reads nothing).
    spec.probe = if rule.actions.iter().all(|a| a.event == Event::TaskEnd) { probe::TASK_END } else { probe::TASK_BEGIN };
    Ok(spec)
}

fn arg_text(site: &ProbeSite, idx: usize) -> String {
    site.args_text.split_whitespace().nth(idx).unwrap_or("?").to_string()
}

/// The tprof probe an event is.
pub fn event_id(e: Event) -> u32 {
    match e {
        Event::TaskBegin => probe::TASK_BEGIN,
        Event::TaskEnd => probe::TASK_END,
        Event::RegionBegin => probe::REGION_BEGIN,
        Event::RegionEnd => probe::REGION_END,
        Event::Log => probe::LOG,
    }
}

/// Which of a mapping's probes some files have, and which sites it covers.
#[derive(Debug, Default)]
pub struct Coverage {
    /// (site's `provider:name`, its spec or why it cannot be used).
    pub sites: Vec<(String, Result<UsdtSpec, String>)>,
    /// Mapped probes no file has.
    pub missing: Vec<String>,
}

impl Coverage {
    /// The mapping applied to `sites` (of one or more files).
    pub fn of<'a>(mapping: &ProbeMapping, sites: impl IntoIterator<Item = &'a ProbeSite>) -> Coverage {
        let mut c = Coverage::default();
        let mut seen = std::collections::HashSet::new();
        for s in sites {
            if let Some(rule) = mapping.rule(&s.provider, &s.name) {
                seen.insert(rule.full_name());
                c.sites.push((s.full_name(), compile_site(rule, s)));
            }
        }
        c.missing = mapping.rules.iter().map(|r| r.full_name()).filter(|n| !seen.contains(n)).collect();
        c
    }

    /// Sites that will be attached.
    pub fn usable(&self) -> usize {
        self.sites.iter().filter(|(_, r)| r.is_ok()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{parse_args, parse_each};
    use crate::mapping::parse_mapping;

    fn site(name: &str, args: &str) -> ProbeSite {
        ProbeSite {
            provider: "postgresql".into(),
            name: name.into(),
            pc: 0x1000,
            file_offset: 0x1000,
            semaphore: 0,
            semaphore_offset: 0,
            args_text: args.into(),
            args: parse_args(args),
            each: parse_each(args, None),
        }
    }

    #[test]
    fn remaps_the_arguments_the_actions_use() {
        let m = parse_mapping(
            "postgresql:lock__wait__start region-begin \"lock wait\"\n\
             postgresql:lock__wait__start log \"lock.tag\" int(arg0, arg1, arg2, arg3, arg4)\n\
             postgresql:lock__wait__start log \"lock.mode\" int(arg5)\n",
            "m",
        )
        .unwrap();
        let s = site("lock__wait__start", "4@(%r12) 4@4(%r12) 4@8(%r12) 2@12(%r12) 1@14(%r12) -4@%r13d");
        let spec = compile_site(&m.rules[0], &s).unwrap();
        assert_eq!((spec.nactions, spec.nargs, spec.probe), (3, 6, probe::TASK_BEGIN));
        assert_eq!(&spec.args[..], &s.each.iter().map(|a| *a.as_ref().unwrap()).collect::<Vec<_>>()[..]);
        let a = &spec.actions;
        assert_eq!((a[0].event as u32, a[0].text_len, &a[0].text[..9]), (probe::REGION_BEGIN, 9, &b"lock wait"[..]));
        assert_eq!((a[1].event as u32, a[1].form, a[1].arg, a[1].arg2), (probe::LOG, foreign::INTS, 0, 5));
        assert_eq!((a[2].form, a[2].arg, a[2].arg2), (foreign::INTS, 5, 1));
        // Only the arguments used, in the slots named: the 8-argument probe fits.
        let m = parse_mapping("postgresql:buffer__read__done log \"hit\" int(arg7)", "m").unwrap();
        let s = site("buffer__read__done", "-4@-136(%rbp) 4@-132(%rbp) 4@0(%r13) 4@4(%r13) 4@8(%r13) -4@12(%r13) 1@-149(%rbp) 1@-117(%rbp)");
        let spec = compile_site(&m.rules[0], &s).unwrap();
        assert_eq!((spec.nargs, spec.args[0]), (1, *s.each[7].as_ref().unwrap()));
        let end = parse_mapping("postgresql:query__done task-end", "m").unwrap();
        assert_eq!(compile_site(&end.rules[0], &site("query__done", "8@-144(%rbp)")).unwrap().probe, probe::TASK_END);
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        for (map, args, want) in [
            ("p:q log \"k\" int(arg3)", "8@%rdi", "arg3 is out of range: the probe has 1 argument"),
            ("p:q task-begin cstr(arg0)", "-4@%eax", "is a 4-byte value, not a pointer"),
            ("p:q task-begin str(arg0, arg1)", "8@$5 8@%rsi", "is a constant, not a pointer"),
            ("p:q log \"k\" int(arg0)", "-4@40+CheckpointStats(%rip)", "symbol table"),
            ("p:q log \"a\" int(arg0, arg0, arg0, arg0)\np:q log \"b\" int(arg0, arg0, arg0)", "8@%rdi", "more than 6 argument values"),
        ] {
            let m = parse_mapping(&map.replace("p:q", "postgresql:q"), "m").unwrap();
            let e = compile_site(&m.rules[0], &site("q", args)).unwrap_err();
            assert!(e.contains(want) && e.contains("postgresql:q") && e.contains("mapping line"), "{map} / {args}: {e}");
        }
    }

    #[test]
    fn coverage_names_missing_probes() {
        let m = parse_mapping("postgresql:query__start task-begin cstr(arg0)\npostgresql:nope task-end", "m").unwrap();
        let sites = [site("query__start", "8@%rdi"), site("query__done", "8@%rdi")];
        let c = Coverage::of(&m, &sites);
        assert_eq!((c.usable(), c.missing.clone()), (1, vec!["postgresql:nope".to_string()]));
    }
}
