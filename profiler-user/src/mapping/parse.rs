//! The mapping file grammar (`usdt-probes/MAPPING.md`): one event per line,
//!
//! ```text
//! # comment
//! PROVIDER:PROBE  task-begin  VALUE [sql] [sqlcommenter]
//! PROVIDER:PROBE  task-end
//! PROVIDER:PROBE  region-begin "NAME"
//! PROVIDER:PROBE  region-end   "NAME"
//! PROVIDER:PROBE  log "KEY" VALUE
//! VALUE := cstr(argN) | str(argN, argM) | int(argN[, argM]...)
//! ```
//!
//! Several lines may name one probe: its events run in the order of the lines.

use profiler_common::{foreign, FOREIGN_TEXT_LEN, MAX_FOREIGN_ACTIONS, MAX_USDT_ARGS};

use super::{Action, Event, MappingError, ProbeMapping, Rule, Value};

/// Longest mapping file line looked at.
const MAX_LINE: usize = 1024;
/// Most rules in one mapping.
pub const MAX_RULES: usize = 256;

/// Parses a mapping file; `source` names it in errors.
pub fn parse_mapping(text: &str, source: &str) -> Result<ProbeMapping, MappingError> {
    let mut m = ProbeMapping { source: source.to_string(), rules: Vec::new() };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| MappingError { source: source.to_string(), line, message };
        if raw.len() > MAX_LINE {
            return Err(err(format!("line longer than {MAX_LINE} bytes")));
        }
        let l = strip_comment(raw).trim();
        if l.is_empty() {
            continue;
        }
        let (probe, rest) = l.split_once(char::is_whitespace).ok_or_else(|| err(format!("`{l}`: expected PROVIDER:PROBE then an event")))?;
        let (provider, name) = probe.split_once(':').ok_or_else(|| err(format!("`{probe}`: expected PROVIDER:PROBE")))?;
        let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(provider) || !ident(name) {
            return Err(err(format!("`{probe}`: provider and probe are names of letters, digits and `_`")));
        }
        if provider == profiler_common::probe::PROVIDER {
            return Err(err(format!("`{probe}`: tprof's own probes need no mapping")));
        }
        let action = parse_action(rest.trim(), line).map_err(err)?;
        match m.rules.iter_mut().find(|r| r.provider == provider && r.name == name) {
            Some(r) => {
                if action.event != Event::Log {
                    return Err(err(format!(
                        "{probe}: {} after its first event: a probe stands for one task or region event, on its first line, then logs",
                        action.event.keyword()
                    )));
                }
                if r.actions.len() >= MAX_FOREIGN_ACTIONS {
                    return Err(err(format!("{probe}: more than {MAX_FOREIGN_ACTIONS} events for one probe")));
                }
                r.actions.push(action);
            }
            None => {
                if m.rules.len() >= MAX_RULES {
                    return Err(err(format!("more than {MAX_RULES} probes in one mapping")));
                }
                m.rules.push(Rule { provider: provider.to_string(), name: name.to_string(), actions: vec![action], line });
            }
        }
    }
    Ok(m)
}

/// The line without a `#` comment (outside quotes).
fn strip_comment(l: &str) -> &str {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in l.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '#' if !quoted => return &l[..i],
            _ => {}
        }
    }
    l
}

fn parse_action(rest: &str, line: usize) -> Result<Action, String> {
    let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let tail = tail.trim();
    let event = match word {
        "task-begin" => Event::TaskBegin,
        "task-end" => Event::TaskEnd,
        "region-begin" => Event::RegionBegin,
        "region-end" => Event::RegionEnd,
        "log" => Event::Log,
        other => return Err(format!("unknown event `{other}` (task-begin, task-end, region-begin, region-end, log)")),
    };
    let mut a = Action { event, text: String::new(), value: Value::None, flags: 0, line };
    match event {
        Event::TaskEnd => {
            if !tail.is_empty() {
                return Err(format!("task-end takes nothing, found `{tail}`"));
            }
        }
        Event::RegionBegin | Event::RegionEnd => {
            let (text, after) = quoted(tail)?;
            if !after.trim().is_empty() {
                return Err(format!("{}: unexpected `{}` after the name", word, after.trim()));
            }
            a.text = checked_text(text, "region name")?;
        }
        Event::Log => {
            let (text, after) = quoted(tail)?;
            a.text = checked_text(text, "log key")?;
            let (value, after) = parse_value(after.trim())?;
            if !after.trim().is_empty() {
                return Err(format!("log: unexpected `{}` after the value", after.trim()));
            }
            a.value = value;
        }
        Event::TaskBegin => {
            let (value, after) = parse_value(tail)?;
            if matches!(value, Value::Ints(_)) {
                return Err("task-begin: the task name is a string: cstr(argN) or str(argN, argM)".into());
            }
            a.value = value;
            for opt in after.split_whitespace() {
                a.flags |= match opt {
                    "sql" => foreign::TASK_SQL,
                    "sqlcommenter" => foreign::TASK_SQLCOMMENTER,
                    other => return Err(format!("task-begin: unknown option `{other}` (sql, sqlcommenter)")),
                };
            }
        }
    }
    Ok(a)
}

fn checked_text(text: String, what: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err(format!("empty {what}"));
    }
    if text.len() > FOREIGN_TEXT_LEN {
        return Err(format!("{what} \"{text}\" is longer than {FOREIGN_TEXT_LEN} bytes"));
    }
    Ok(text)
}

/// A `"..."` string (`\"` and `\\` escaped) and what follows it.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let Some(body) = s.strip_prefix('"') else {
        return Err(format!("expected a \"quoted\" name, found `{s}`"));
    };
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            '"' => return Ok((out, &body[i + 1..])),
            c if c.is_control() => return Err("control character in a quoted name".into()),
            c => out.push(c),
        }
    }
    Err(format!("unterminated quote in `{s}`"))
}

/// `cstr(argN)`, `str(argN, argM)` or `int(argN, ...)`, and what follows.
fn parse_value(s: &str) -> Result<(Value, &str), String> {
    let Some(open) = s.find('(') else {
        return Err(format!("expected a value: cstr(argN), str(argN, argM) or int(argN, ...), found `{s}`"));
    };
    let close = s.find(')').ok_or_else(|| format!("missing `)` in `{s}`"))?;
    if close < open {
        return Err(format!("bad value `{s}`"));
    }
    let func = s[..open].trim();
    let args: Vec<usize> = s[open + 1..close].split(',').map(|a| arg_index(a.trim())).collect::<Result<_, _>>()?;
    let value = match (func, args.as_slice()) {
        ("cstr", [a]) => Value::CStr(*a),
        ("str", [p, l]) => Value::Str(*p, *l),
        ("int", list) if !list.is_empty() && list.len() <= MAX_USDT_ARGS => Value::Ints(list.to_vec()),
        ("cstr", _) => return Err("cstr takes one argument: cstr(argN)".into()),
        ("str", _) => return Err("str takes two arguments: str(argN, argM) (address, length)".into()),
        ("int", _) => return Err(format!("int takes 1 to {MAX_USDT_ARGS} arguments")),
        (other, _) => return Err(format!("unknown value `{other}(...)` (cstr, str, int)")),
    };
    Ok((value, &s[close + 1..]))
}

/// `argN` -> N.
fn arg_index(s: &str) -> Result<usize, String> {
    s.strip_prefix("arg")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < 64)
        .ok_or_else(|| format!("`{s}`: expected argN (N from 0, the probe's Nth argument)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        let m = parse_mapping(
            "# queries\n\
             app:req__start  task-begin cstr(arg0) sql sqlcommenter   # the query\n\
             app:req__start  log \"query # text\" cstr(arg0)\n\
             app:req__done   task-end\n\
             \n\
             app:step__start region-begin \"step \\\"one\\\"\"\n\
             app:step__done  region-end \"step \\\"one\\\"\"\n\
             app:lock        log \"lock.tag\" int(arg0, arg1,arg4)\n\
             app:named       task-begin str(arg1, arg2)\n",
            "m",
        )
        .unwrap();
        assert_eq!(m.rules.len(), 6);
        let start = &m.rules[0];
        assert_eq!((start.full_name().as_str(), start.line, start.actions.len()), ("app:req__start", 2, 2));
        assert_eq!(start.actions[0].value, Value::CStr(0));
        assert_eq!(start.actions[0].flags, foreign::TASK_SQL | foreign::TASK_SQLCOMMENTER);
        assert_eq!(start.actions[1].text, "query # text");
        assert_eq!(m.rules[2].actions[0].text, "step \"one\"");
        assert_eq!(m.rules[4].actions[0].value, Value::Ints(vec![0, 1, 4]));
        assert_eq!(m.rules[5].actions[0].value, Value::Str(1, 2));
        assert_eq!(m.rule("app", "req__done").unwrap().actions[0].event, Event::TaskEnd);
    }

    #[test]
    fn errors_name_their_line() {
        for (text, line, want) in [
            ("a:b task-start cstr(arg0)", 1, "unknown event `task-start`"),
            ("\n\nab task-end", 3, "expected PROVIDER:PROBE"),
            ("a:b", 1, "expected PROVIDER:PROBE then an event"),
            ("a:b task-end now", 1, "task-end takes nothing"),
            ("a:b region-begin parse", 1, "quoted"),
            ("a:b region-begin \"parse", 1, "unterminated"),
            ("a:b region-begin \"\"", 1, "empty region name"),
            ("a:b log \"k\" cstr(arg0, arg1)", 1, "cstr takes one argument"),
            ("a:b log \"k\" int(x)", 1, "expected argN"),
            ("a:b log \"k\" int(arg1", 1, "missing `)`"),
            ("a:b log \"k\" float(arg1)", 1, "unknown value"),
            ("a:b log \"k\"", 1, "expected a value"),
            ("a:b task-begin int(arg0)", 1, "task name is a string"),
            ("a:b task-begin cstr(arg0) fast", 1, "unknown option `fast`"),
            ("tprof:task_begin task-end", 1, "need no mapping"),
            ("a:b-c task-end", 1, "names of letters"),
            ("a:b log \"0123456789012345678901234567890123\" int(arg0)", 1, "longer than 32"),
            ("a:b task-end\na:b log \"k\" int(arg0)\na:b log \"k\" int(arg0)\na:b log \"k\" int(arg0)\na:b log \"k\" int(arg0)", 5, "more than 4 events"),
            ("a:b log \"k\" int(arg0)\na:b task-end", 2, "after its first event"),
        ] {
            let e = parse_mapping(text, "f.map").unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("f.map:{line}: ")) && shown.contains(want), "{text}: {shown}");
        }
    }
}
