//! Builds the eBPF programs (`profiler-ebpf`) for `bpfel-unknown-none` with Debian's
//! rustc-web and bpf-linker (see `docs/toolchain.md` and `cargo xtask setup`), and embeds
//! the object. When that toolchain is missing, tprof still builds (so unit tests run
//! anywhere) but refuses to attach, saying to run `cargo xtask setup`.
//!
//! Also sets `TPROF_VERSION` and `TPROF_LONG_VERSION` for `tprof -V`/`--version`: the
//! package version, the git commit it was built from (`TPROF_GIT_COMMIT` if set, else
//! `git rev-parse HEAD`, else "unknown" outside a git checkout), the probe ABI version and
//! whether the eBPF programs are embedded.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BPF_RUSTC: &str = "/usr/bin/rustc";
const OBJ_NAME: &str = "profiler.bpf.o";
/// The probe ABI this tprof reads: `usdt-probes/ABI.md`, section 5 (checked by tests/tests/dist.rs).
const PROBE_ABI: &str = "v1";

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
    if let Some(reason) = &missing {
        println!("cargo:warning=tprof is built WITHOUT its eBPF programs: {reason}");
        println!("cargo:warning=run `cargo xtask setup` to install the eBPF toolchain, then rebuild");
        println!("cargo:rustc-cfg=tprof_ebpf_missing");
        println!("cargo:rustc-env=TPROF_EBPF_MISSING={reason}");
        if let Err(e) = std::fs::write(&out, []) {
            panic!("cannot write {}: {e}", out.display());
        }
    }
    versions(&root, missing.as_deref());
}

/// `TPROF_VERSION` (one line) and `TPROF_LONG_VERSION` (a few) for clap's version flags.
fn versions(root: &Path, ebpf_missing: Option<&str>) {
    println!("cargo:rerun-if-env-changed=TPROF_GIT_COMMIT");
    let commit = match env::var("TPROF_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit(root).unwrap_or_else(|| "unknown".to_string()),
    };
    let version = env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let short: String = commit.chars().take(12).collect();
    println!("cargo:rustc-env=TPROF_VERSION={version} (commit {short}, probe ABI {PROBE_ABI})");
    let ebpf = match ebpf_missing {
        None => "embedded".to_string(),
        Some(reason) => format!("MISSING ({reason})"),
    };
    let profile = env::var("PROFILE").unwrap_or_default();
    let target = env::var("TARGET").unwrap_or_default();
    // One line: a `cargo:rustc-env` value cannot hold a newline.
    println!(
        "cargo:rustc-env=TPROF_LONG_VERSION={version} (commit {commit}, probe ABI {PROBE_ABI}, eBPF programs {ebpf}, {profile} build for {target})"
    );
}

/// The commit HEAD names, when `root` is a git checkout and git is installed. Tells cargo to
/// rerun this script when HEAD moves (a commit, a checkout).
fn git_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").current_dir(root).args(args).output().ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = git(&["rev-parse", "--verify", "HEAD"])?;
    // HEAD itself, and the branch file it points to (or packed-refs, where it may live).
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &branch]));
        watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watch.into_iter().flatten() {
        let path = root.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
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
