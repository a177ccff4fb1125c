//! `soft completions`: a shell completion script, generated from the same argument
//! definitions the parser uses, so it cannot fall behind them.

use clap::CommandFactory;

use super::Cli;
use crate::error::Result;
use crate::out;

/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
///
/// bash: `soft completions bash > ~/.local/share/bash-completion/completions/soft`;
/// zsh: `soft completions zsh > "${fpath[1]}/_soft"`;
/// fish: `soft completions fish > ~/.config/fish/completions/soft.fish`.
#[derive(clap::Args)]
pub struct Args {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "soft", &mut script);
    out!("{}", String::from_utf8_lossy(&script))
}
