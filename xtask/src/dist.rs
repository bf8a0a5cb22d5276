//! `cargo xtask dist` and `cargo xtask install`: tprof for hosts without a checkout.
//!
//! `dist` builds one optimized, statically linked `tprof` (its eBPF object embedded, as in
//! every build; glibc linked in with `-C target-feature=+crt-static`) and lays it out as a
//! prefix tree under `target/dist/`, plus a tarball of that tree:
//!
//! ```text
//! target/dist/bin/tprof
//! target/dist/share/man/man1/tprof.1, tprof-attach.1, ...
//! target/dist/share/bash-completion/completions/tprof
//! target/dist/share/zsh/site-functions/_tprof
//! target/dist/share/fish/vendor_completions.d/tprof.fish
//! target/dist/tprof-VERSION-x86_64-linux.tar.gz   (the same tree: `tar -C /usr/local -xzf`)
//! ```
//!
//! `install [--prefix DIR]` (default `/usr/local`) runs `dist` and copies that tree into
//! `DIR`. tprof's privileged helper (`tprof-helper`) is tprof itself re-executed through
//! `/proc/self/exe`: there is no second file to install. See `docs/install.md`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, root, status};

/// The only target installed here (rustup stable, x86_64 glibc). An explicit `--target`
/// keeps `+crt-static` off build scripts and proc macros, which cannot link statically.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// The files of the tree, relative to its root (the binary first).
const TREE: [&str; 5] = [
    "bin/tprof",
    "share/man/man1",
    "share/bash-completion/completions/tprof",
    "share/zsh/site-functions/_tprof",
    "share/fish/vendor_completions.d/tprof.fish",
];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Where `dist` writes its tree.
pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// `cargo xtask dist`: builds and lays out the tree; returns its directory.
pub fn dist() -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "profiler-user", "--bin", "tprof", "--target", TRIPLE]);
    // Explicit flags replace `.cargo/config.toml`'s, so frame pointers are asked for again
    // (user stacks walk through tprof's own code too).
    build.env("CARGO_ENCODED_RUSTFLAGS", ["-Cforce-frame-pointers=yes", "-Ctarget-feature=+crt-static"].join("\x1f"));
    build.env_remove("RUSTFLAGS");
    status(&mut build)?;
    let built = target_dir().join(TRIPLE).join("release").join("tprof");

    // Never ship a tprof that cannot attach (built where the eBPF toolchain was missing).
    let version = version_of(&built)?;
    if !version.contains("eBPF programs embedded") {
        bail!("{} was built without its eBPF programs ({version}): run `cargo xtask setup`", built.display());
    }

    let out = dist_dir();
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let bin = out.join(TREE[0]);
    fs::create_dir_all(out.join("bin")).with_context(|| format!("creating {}", out.display()))?;
    fs::copy(&built, &bin).with_context(|| format!("copying {} to {}", built.display(), bin.display()))?;

    // Completions and man pages, from the same clap definitions (profiler-user/examples).
    status(cargo().args(["run", "--quiet", "-p", "profiler-user", "--example", "tprof-docs", "--"]).arg(&out))?;
    for rel in TREE {
        if !out.join(rel).exists() {
            bail!("{} is missing after the build", out.join(rel).display());
        }
    }

    // `tprof 0.1.0 (commit ...)`: the version is the second word.
    let number = version.split_whitespace().nth(1).unwrap_or("unknown");
    let tarball = out.join(format!("tprof-{number}-x86_64-linux.tar.gz"));
    status(Command::new("tar").arg("-C").arg(&out).arg("-czf").arg(&tarball).args(["--owner=0", "--group=0", "bin", "share"]))?;

    println!("xtask: {version}");
    println!("xtask: {} (static, needs no shared library), man pages and completions under {}", bin.display(), out.display());
    println!("xtask: {} (the same tree: `tar -C /usr/local -xzf` on the target host)", tarball.display());
    Ok(out)
}

/// `tprof --version` of a binary.
fn version_of(bin: &Path) -> Result<String> {
    let out = Command::new(bin).arg("--version").output().with_context(|| format!("running {} --version", bin.display()))?;
    if !out.status.success() {
        bail!("{} --version failed ({})", bin.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `cargo xtask install [--prefix DIR] [--no-build]`.
pub fn install(args: &[String]) -> Result<()> {
    let mut prefix = PathBuf::from("/usr/local");
    let mut build = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--prefix" => prefix = it.next().map(PathBuf::from).context("--prefix needs a directory")?,
            "--no-build" => build = false,
            other => bail!("install: unknown argument {other:?} (usage: install [--prefix DIR] [--no-build])"),
        }
    }
    let from = if build {
        crate::setup::ensure()?;
        dist()?
    } else {
        dist_dir()
    };
    if !from.join(TREE[0]).exists() {
        bail!("{} is missing: run `cargo xtask dist` first (or drop --no-build)", from.join(TREE[0]).display());
    }
    for rel in TREE {
        copy_tree(&from.join(rel), &prefix.join(rel))?;
    }
    println!("xtask: installed {}", prefix.join(TREE[0]).display());
    println!("xtask: man pages in {}, completions for bash, zsh and fish under {}", prefix.join(TREE[1]).display(), prefix.join("share").display());
    Ok(())
}

/// Copies a file (or a directory's files) into place: each through a temporary name in the
/// destination directory and a rename, so a tprof running from there keeps its old file.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    let dir = to.parent().context("destination has no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = to.file_name().context("destination has no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.xtask-install"));
    fs::copy(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    // The binary keeps its mode (rwxr-xr-x); pages and completions are rw-r--r--.
    let mode = if from.ends_with(TREE[0]) { 0o755 } else { 0o644 };
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("moving {} to {}", tmp.display(), to.display()))?;
    Ok(())
}
