//! Built-in mappings (`--preset NAME`), written in the mapping grammar
//! (`usdt-probes/MAPPING.md`) and parsed like a file.

use super::{parse_mapping, MappingError, ProbeMapping};

/// PostgreSQL 12 and later (`src/backend/utils/probes.d`): one task per query of the simple
/// query protocol, named by its normalized text.
pub const POSTGRES: &str = r#"# PostgreSQL (12+): one task per query.
# query__start(const char *query) ... query__done(const char *query)
postgresql:query__start          task-begin cstr(arg0) sql sqlcommenter
postgresql:query__start          log "query" cstr(arg0)
postgresql:query__done           task-end
# query stages (parse and rewrite carry the query text; plan and execute nothing)
postgresql:query__parse__start   region-begin "parse"
postgresql:query__parse__done    region-end "parse"
postgresql:query__rewrite__start region-begin "rewrite"
postgresql:query__rewrite__done  region-end "rewrite"
postgresql:query__plan__start    region-begin "plan"
postgresql:query__plan__done     region-end "plan"
postgresql:query__execute__start region-begin "execute"
postgresql:query__execute__done  region-end "execute"
# heavyweight locks: (locktag_field1..4, locktag_type, lockmode)
postgresql:lock__wait__start     region-begin "lock wait"
postgresql:lock__wait__start     log "lock.tag" int(arg0, arg1, arg2, arg3, arg4)
postgresql:lock__wait__start     log "lock.mode" int(arg5)
postgresql:lock__wait__done      region-end "lock wait"
# lightweight locks: (const char *tranche, LWLockMode mode)
postgresql:lwlock__wait__start   region-begin "lwlock wait"
postgresql:lwlock__wait__start   log "lwlock.tranche" cstr(arg0)
postgresql:lwlock__wait__done    region-end "lwlock wait"
# shared buffers and storage: (fork, block, tablespace, database, relation, backend, ...)
postgresql:buffer__read__start   region-begin "buffer read"
postgresql:buffer__read__done    region-end "buffer read"
postgresql:smgr__md__read__start region-begin "smgr read"
postgresql:smgr__md__read__done  region-end "smgr read"
postgresql:smgr__md__write__start region-begin "smgr write"
postgresql:smgr__md__write__done region-end "smgr write"
# transactions: (LocalTransactionId)
postgresql:transaction__commit   log "transaction.commit" int(arg0)
postgresql:transaction__abort    log "transaction.abort" int(arg0)
"#;

/// The names `--preset` takes.
pub const NAMES: &[&str] = &["postgres"];

/// The preset `name`.
pub fn preset(name: &str) -> Result<ProbeMapping, MappingError> {
    let text = match name {
        "postgres" | "postgresql" => POSTGRES,
        other => {
            return Err(MappingError { source: String::new(), line: 0, message: format!("--preset {other}: no such preset (known: {})", NAMES.join(", ")) })
        }
    };
    parse_mapping(text, &format!("preset {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse() {
        let pg = preset("postgres").unwrap();
        assert_eq!(pg.rule("postgresql", "query__start").unwrap().actions.len(), 2);
        assert_eq!(pg.rule("postgresql", "lock__wait__start").unwrap().actions.len(), 3);
        assert!(preset("mysql").unwrap_err().to_string().contains("no such preset"));
    }
}
