//! A library dlopen'ed after tprof attached gets its probes attached by the next rescan.

use std::path::{Path, PathBuf};
use std::process::Command;

use tprof_tests::*;

fn gcc(args: &[&str], out: &Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-Wall", "-Werror", "-I"])
        .arg(root.join("../usdt-probes/include"))
        .args(args.iter().map(|a| if a.ends_with(".c") { root.join("c").join(a).into_os_string() } else { (*a).into() }))
        .arg("-o")
        .arg(out)
        .status()
        .expect("gcc runs (cargo xtask setup installs it)");
    assert!(st.success(), "gcc {args:?} failed");
}

#[test]
fn library_loaded_after_attach_is_traced() {
    require_root();
    let dir = std::env::temp_dir().join(format!("tprof-dlopen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (lib, main) = (dir.join("libreq.so"), dir.join("dlopen_main"));
    gcc(&["-shared", "-fPIC", "dlopen_lib.c"], &lib);
    gcc(&["dlopen_main.c", "-ldl"], &main);

    let mut target = start_program(&main, &[lib.to_str().expect("utf-8 path")]);
    let tprof = attach(&[target.pid()], &[]);
    target.send_line("go");
    target.expect_line("loaded", &mut Vec::new());
    // Wait until tprof's rescan has attached the new library's probes.
    let stderr = tprof.stderr.as_ref().expect("stderr");
    let mut seen = Vec::new();
    loop {
        match stderr.recv_timeout(PATIENCE) {
            Ok(l) if l.contains("more probe sites") => break,
            Ok(l) => seen.push(l),
            Err(_) => panic!("tprof never attached the dlopen'ed library: {seen:?}"),
        }
    }
    target.send_line("go");
    target.expect_line("done", &mut Vec::new());
    assert!(target.wait().success());
    let (out, status) = collect(tprof);
    assert!(status.success());
    let s = summary(&out, "lib-request");
    assert_eq!(s["span_id"], "0000000000003333");
    assert_eq!(s["trace_id"], "00000000000011110000000000002222");
    assert!(ms(s, "blocked_ns") >= 6.9, "the library's 7 ms sleep is charged to its task: {s}");
    let _ = std::fs::remove_dir_all(&dir);
}
