//! Installs what a fresh machine of this kind needs, per `docs/toolchain.md`: Debian's
//! rustc-web (with the prebuilt bpfel-unknown-none sysroot), LLVM 22, sdt.h, gcc, bpftool,
//! bpftrace, and bpf-linker 0.13 built against LLVM 22. Checks first; installs only what
//! is missing, so a second run takes well under a second.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::status;

const APT_PACKAGES: [&str; 11] = [
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "systemtap-sdt-dev",
    "gcc",
    "libc6-dev",
    "bpftool",
    "bpftrace",
    // `cargo xtask bench e2e` drives the example service with it.
    "wrk",
    // tests/tests/html.rs opens the HTML report in it, headless.
    "chromium",
    // `go tool pprof` reads tprof's --pprof files in tests/tests/profile.rs.
    "golang-go",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Python packages the export tests validate against (published schemas, offline), with a
/// module each that proves the package is importable.
const PIP_PACKAGES: [(&str, &str); 4] = [
    ("perfetto==0.59.1", "perfetto.protos.perfetto.trace.perfetto_trace_pb2"),
    ("protobuf>=6.31.1", "google.protobuf.json_format"),
    ("opentelemetry-proto", "opentelemetry.proto.collector.trace.v1.trace_service_pb2"),
    ("jsonschema", "jsonschema"),
];
const BPF_SYSROOT: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";

fn apt_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

/// What is missing, in words (empty: nothing).
fn missing() -> Vec<String> {
    let mut m: Vec<String> = APT_PACKAGES.iter().filter(|p| !apt_installed(p)).map(|p| format!("apt package {p}")).collect();
    if !Path::new(BPF_SYSROOT).exists() {
        m.push(format!("{BPF_SYSROOT} (from libstd-rust-web-dev-bpf)"));
    }
    if !bpf_linker_ok() {
        m.push(format!("bpf-linker {BPF_LINKER_VERSION} (LLVM 22)"));
    }
    m.extend(missing_pip().into_iter().map(|p| format!("python package {p}")));
    m
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn missing_pip() -> Vec<&'static str> {
    PIP_PACKAGES.iter().filter(|(_, module)| !python_has(module)).map(|(pkg, _)| *pkg).collect()
}

/// Runs setup if anything is missing (the other commands call this first).
pub fn ensure() -> Result<()> {
    let m = missing();
    if m.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: missing {}; running setup", m.join(", "));
    run()
}

pub fn run() -> Result<()> {
    let pkgs: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !apt_installed(p)).collect();
    if !pkgs.is_empty() {
        eprintln!("xtask: installing apt packages: {}", pkgs.join(" "));
        let sudo = if is_root() { None } else { Some("sudo") };
        let apt = |args: &[&str]| {
            let mut c = match sudo {
                Some(s) => {
                    let mut c = Command::new(s);
                    c.arg("apt-get");
                    c
                }
                None => Command::new("apt-get"),
            };
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        status(&mut apt(&["update", "-qq"]))?;
        let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
        install.args(&pkgs);
        status(&mut install).context("apt-get install failed (the package lists may be stale: run `apt-get update`)")?;
    }
    if !bpf_linker_ok() {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
        status(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["install", "--locked", "bpf-linker", "--version", BPF_LINKER_VERSION])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
        )?;
        if !bpf_linker_ok() {
            bail!("bpf-linker was installed but `bpf-linker --version` does not run: is ~/.cargo/bin on PATH?");
        }
    }
    let pip = missing_pip();
    if !pip.is_empty() {
        eprintln!("xtask: installing python packages: {}", pip.join(" "));
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(&pip);
        if status(&mut cmd).is_err() {
            // Debian's system python refuses user installs without this flag.
            let mut cmd = Command::new("python3");
            cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--break-system-packages"]).args(&pip);
            status(&mut cmd).context("pip install of the schema packages failed")?;
        }
    }
    let left = missing();
    if !left.is_empty() {
        bail!("still missing after setup: {}", left.join(", "));
    }
    eprintln!("xtask: setup complete");
    Ok(())
}

fn is_root() -> bool {
    crate::is_root()
}
