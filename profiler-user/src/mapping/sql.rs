//! SQL for task names: normalization (so that literals do not make every query a task type
//! of its own) and the sqlcommenter `traceparent`
//! (<https://google.github.io/sqlcommenter/spec/>).

/// Longest normalized name kept (in characters).
pub const MAX_NORMALIZED: usize = 200;

/// `SELECT * FROM t WHERE id = 42 AND name = 'x'` -> `SELECT * FROM t WHERE id = $1 AND name
/// = $2`: numbers and quoted strings (`'...'`, `E'...'`, `$$...$$`) become `$1`, `$2`...,
/// comments are dropped, whitespace collapses, and the result is bounded
/// ([`MAX_NORMALIZED`] characters, `...` when cut). Identifiers (`"t1"`, `t1`) and existing
/// parameters (`$1`) stay. Text cut short by the kernel's bounded copy ends in an
/// unterminated literal or comment: it is dropped the same way.
pub fn normalize(sql: &str) -> String {
    let b: Vec<char> = sql.chars().collect();
    let mut out = String::new();
    let mut n = 0;
    let mut i = 0;
    let mut space = false;
    let push_param = |out: &mut String, n: &mut usize| {
        *n += 1;
        out.push('$');
        out.push_str(&n.to_string());
    };
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            space = true;
            i += 1;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        let prev_ident = out.chars().last().is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '$');
        match c {
            '-' if b.get(i + 1) == Some(&'-') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
                space = true;
                if out.ends_with(' ') {
                    out.pop();
                }
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
                space = true;
                if out.ends_with(' ') {
                    out.pop();
                }
            }
            '\'' => {
                if out.ends_with('E') || out.ends_with('e') || out.ends_with('B') || out.ends_with('X') {
                    out.pop();
                }
                i += 1;
                while i < b.len() {
                    // `''` (a quote in the string) and `\x` (an escape) skip two.
                    if (b[i] == '\'' && b.get(i + 1) == Some(&'\'')) || b[i] == '\\' {
                        i += 2;
                    } else if b[i] == '\'' {
                        break;
                    } else {
                        i += 1;
                    }
                }
                i += 1;
                push_param(&mut out, &mut n);
            }
            '$' if b.get(i + 1) == Some(&'$') => {
                i += 2;
                while i < b.len() && !(b[i] == '$' && b.get(i + 1) == Some(&'$')) {
                    i += 1;
                }
                i += 2;
                push_param(&mut out, &mut n);
            }
            '"' => {
                out.push('"');
                i += 1;
                while i < b.len() && b[i] != '"' {
                    out.push(b[i]);
                    i += 1;
                }
                out.push('"');
                i += 1;
            }
            c if c.is_ascii_digit() && !prev_ident => {
                // 42, 4.2, 1e-3, 0x1F
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.' || ((b[i] == '-' || b[i] == '+') && matches!(b[i - 1], 'e' | 'E'))) {
                    i += 1;
                }
                push_param(&mut out, &mut n);
            }
            '.' if b.get(i + 1).is_some_and(char::is_ascii_digit) && !prev_ident => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                push_param(&mut out, &mut n);
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
        if out.chars().count() > MAX_NORMALIZED {
            let cut: String = out.chars().take(MAX_NORMALIZED).collect();
            return format!("{}...", cut.trim_end());
        }
    }
    out.trim_end().trim_end_matches(';').trim_end().to_string()
}

/// The `traceparent` of a sqlcommenter comment in `sql`: (trace-id, parent span-id). Only
/// version `00`, non-zero ids, lowercase hex (W3C Trace Context); the value may be
/// URL-encoded (`%2D` for `-`) as the sqlcommenter spec allows. The last comment wins.
pub fn traceparent(sql: &str) -> Option<(u128, u64)> {
    let mut found = None;
    let mut rest = sql;
    while let Some(at) = rest.find("/*") {
        let body = &rest[at + 2..];
        let Some(end) = body.find("*/") else { break };
        if let Some(tp) = comment_traceparent(&body[..end]) {
            found = Some(tp);
        }
        rest = &body[end + 2..];
    }
    found
}

fn comment_traceparent(comment: &str) -> Option<(u128, u64)> {
    for pair in comment.split(',') {
        let Some((k, v)) = pair.trim().split_once('=') else { continue };
        if k.trim() != "traceparent" {
            continue;
        }
        let v = v.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        let v = v.replace("%2D", "-").replace("%2d", "-");
        let parts: Vec<&str> = v.split('-').collect();
        let [ver, trace, span, flags] = parts.as_slice() else { return None };
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
        if *ver != "00" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        return Some((trace, span));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_literals() {
        for (sql, want) in [
            ("SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = $1"),
            ("select  *\n from t where a = 'x''y' and b=3.5e-2;", "select * from t where a = $1 and b=$2"),
            ("SELECT pg_sleep(0.05)", "SELECT pg_sleep($1)"),
            ("SELECT * FROM t1 WHERE c2 IN (1, 2, -3)", "SELECT * FROM t1 WHERE c2 IN ($1, $2, -$3)"),
            ("SELECT $$body$$, E'\\n', \"Col 1\" FROM x", "SELECT $1, $2, \"Col 1\" FROM x"),
            ("UPDATE t SET v = v + 1 WHERE id = 7 /*traceparent='00-ab-cd-01'*/", "UPDATE t SET v = v + $1 WHERE id = $2"),
            ("SELECT 1 -- comment\n, 2", "SELECT $1 , $2"),
            ("SELECT * FROM t WHERE id = $1", "SELECT * FROM t WHERE id = $1"),
            ("SELECT 'unterminated", "SELECT $1"),
            ("SELECT .5", "SELECT $1"),
        ] {
            assert_eq!(normalize(sql), want, "{sql}");
        }
        let long = format!("SELECT {}", "a, ".repeat(200));
        let n = normalize(&long);
        assert!(n.ends_with("...") && n.chars().count() <= MAX_NORMALIZED + 3, "{n}");
        assert_eq!(normalize("SELECT 1"), normalize("SELECT 99999"));
    }

    #[test]
    fn reads_sqlcommenter_traceparent() {
        let q = "SELECT 1 /*action='index',traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/";
        assert_eq!(traceparent(q), Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7)));
        let enc = "SELECT 1 /*traceparent='00%2D4bf92f3577b34da6a3ce929d0e0e4736%2D00f067aa0ba902b7%2D01'*/";
        assert_eq!(traceparent(enc), Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7)));
        for bad in [
            "SELECT 1",
            "SELECT 1 /*traceparent='01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'*/",
            "SELECT 1 /*traceparent='00-00000000000000000000000000000000-00f067aa0ba902b7-01'*/",
            "SELECT 1 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01'*/",
            "SELECT 1 /*traceparent='00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01'*/",
            "SELECT 1 /*traceparent='00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'",
            "SELECT 1 /*traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01*/",
        ] {
            assert_eq!(traceparent(bad), None, "{bad}");
        }
    }
}
