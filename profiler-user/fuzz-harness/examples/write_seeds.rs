//! Rewrites the `seed-*` files of the fuzz corpus (`profiler-user/fuzz/corpus/<target>/`)
//! from `seeds::all`, after a change of the record ABI or of a seed builder:
//! `cargo run -p tprof-fuzz-harness --example write_seeds`.

use std::path::Path;

use tprof_fuzz_harness::seeds;

fn main() {
    let scratch = std::env::temp_dir().join(format!("tprof-write-seeds-{}", std::process::id()));
    let mut written = 0;
    for (target, list) in seeds::all(&scratch) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("write_seeds: {}: {e}", dir.display());
            std::process::exit(1);
        }
        for (name, bytes) in list {
            if let Err(e) = std::fs::write(dir.join(&name), &bytes) {
                eprintln!("write_seeds: {name}: {e}");
                std::process::exit(1);
            }
            written += 1;
        }
    }
    let _ = std::fs::remove_file(&scratch);
    println!("wrote {written} seeds");
}
