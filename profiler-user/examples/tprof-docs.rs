//! Writes tprof's shell completions and man pages, generated from its clap definitions
//! (`tprof::cli::Cli`), under a prefix-style tree:
//!
//! ```text
//! PREFIX/share/man/man1/tprof.1, tprof-attach.1, ...   (one page per subcommand)
//! PREFIX/share/bash-completion/completions/tprof
//! PREFIX/share/zsh/site-functions/_tprof
//! PREFIX/share/fish/vendor_completions.d/tprof.fish
//! ```
//!
//! `cargo xtask dist` runs it (`cargo run -p profiler-user --example tprof-docs -- PREFIX`).
//! It lives here rather than in xtask so that xtask, which must build before `cargo xtask
//! setup` has installed the eBPF toolchain, does not depend on tprof.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(prefix) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: tprof-docs PREFIX");
        return ExitCode::FAILURE;
    };
    match write_all(&prefix) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tprof-docs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(prefix: &Path) -> Result<()> {
    let man = prefix.join("share/man/man1");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    // One page for tprof and one per subcommand (tprof-attach.1, ...), each naming the others.
    clap_mangen::generate_to(tprof::cli::Cli::command(), &man).with_context(|| format!("writing man pages to {}", man.display()))?;

    for (shell, rel) in [
        (Shell::Bash, "share/bash-completion/completions/tprof"),
        (Shell::Zsh, "share/zsh/site-functions/_tprof"),
        (Shell::Fish, "share/fish/vendor_completions.d/tprof.fish"),
    ] {
        let path = prefix.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut tprof::cli::Cli::command(), "tprof", &mut out);
        fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
