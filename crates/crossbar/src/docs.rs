//! `crossbar docs --out DIR` (hidden): man pages and shell completions generated from the clap
//! definition, so that they never drift from `--help`. The package build runs it.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

/// Writes `man/crossbar.1`, one page per subcommand (`crossbar-ca-sign.1`, …) and
/// `completions/crossbar.{bash,zsh,fish}` under `out`.
pub fn write(out: &Path) -> anyhow::Result<()> {
    let man = out.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    let command = crate::cli::Cli::command();
    clap_mangen::generate_to(command.clone(), &man)
        .with_context(|| format!("cannot write the man pages into {}", man.display()))?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("cannot create {}", completions.display()))?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
    {
        clap_complete::generate_to(shell, &mut command.clone(), "crossbar", &completions)
            .with_context(|| format!("cannot write the {shell} completions"))?;
    }
    Ok(())
}
