//! Builds the eBPF programs (`profiler-ebpf`) for `bpfel-unknown-none` with Debian's
//! rustc-web and bpf-linker (see `docs/toolchain.md` and `cargo xtask setup`), and embeds
//! the object. When that toolchain is missing, tprof still builds (so unit tests run
//! anywhere) but refuses to attach, saying to run `cargo xtask setup`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_RUSTC: &str = "/usr/bin/rustc";
const OBJ_NAME: &str = "profiler.bpf.o";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join(OBJ_NAME);
    for dir in ["profiler-ebpf/src", "profiler-ebpf/Cargo.toml", "profiler-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=TPROF_SKIP_EBPF");
    println!("cargo:rustc-check-cfg=cfg(tprof_ebpf_missing)");

    let missing = if env::var_os("TPROF_SKIP_EBPF").is_some() {
        Some("TPROF_SKIP_EBPF was set at build time".to_string())
    } else {
        build(&root, &out).err()
    };
    if let Some(reason) = missing {
        println!("cargo:warning=tprof is built WITHOUT its eBPF programs: {reason}");
        println!("cargo:warning=run `cargo xtask setup` to install the eBPF toolchain, then rebuild");
        println!("cargo:rustc-cfg=tprof_ebpf_missing");
        println!("cargo:rustc-env=TPROF_EBPF_MISSING={reason}");
        if let Err(e) = std::fs::write(&out, []) {
            panic!("cannot write {}: {e}", out.display());
        }
    }
}

fn build(root: &Path, out: &Path) -> Result<(), String> {
    if !Path::new(BPF_RUSTC).exists() {
        return Err(format!("{BPF_RUSTC} (Debian's rustc-web, with the bpf target) is not installed"));
    }
    let linker_ok = Command::new("bpf-linker").arg("--version").output().map(|o| o.status.success());
    if !matches!(linker_ok, Ok(true)) {
        return Err("bpf-linker is not on PATH".to_string());
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = root.join("target").join("ebpf");
    let flags = ["--cfg=bpf_target_arch=\"x86_64\"", "-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "-p", "profiler-ebpf", "--release", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", BPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env("CARGO_ENCODED_RUSTFLAGS", flags);
    for var in ["RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTDOC"] {
        cmd.env_remove(var);
    }
    let output = cmd.output().map_err(|e| format!("cannot run cargo for the eBPF crate: {e}"))?;
    if !output.status.success() {
        // A real compile error in our eBPF code must fail the build loudly, not be hidden.
        let stderr = String::from_utf8_lossy(&output.stderr);
        panic!("building profiler-ebpf for bpfel-unknown-none failed:\n{stderr}");
    }
    let obj = target_dir.join("bpfel-unknown-none/release/profiler");
    std::fs::copy(&obj, out).map_err(|e| format!("cannot copy {}: {e}", obj.display()))?;
    Ok(())
}
