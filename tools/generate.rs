//! `--generate KIND`: a man page or a shell completion script made from the binary's own
//! clap definitions, printed to stdout (ripgrep's flag). One file for the three binaries
//! (certtool, aop-origin, aop-edge-proxy): each includes it as its `generate` module, so
//! the flag, its kinds and the man page's layout are the same everywhere.

use std::ffi::OsString;
use std::io::Write as _;

use clap::Parser;
use clap_complete::Shell;

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum Kind {
    /// The man page (roff), every subcommand included.
    Man,
    /// The bash completion script.
    CompleteBash,
    /// The zsh completion script.
    CompleteZsh,
    /// The fish completion script.
    CompleteFish,
}

/// The `--generate` flag, flattened into each binary's arguments (so `--help` lists it
/// and the man page and completions know it). Read by [`try_parse`], never from the
/// parsed arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Flag {
    /// Print the man page or a shell completion script to stdout, then exit.
    ///
    /// Both are made from these very flags. For example, bash's completion:
    /// `--generate complete-bash > /etc/bash_completion.d/NAME`.
    #[arg(
        id = "generate",
        long = "generate",
        value_name = "KIND",
        exclusive = true,
        hide_short_help = true
    )]
    _kind: Option<Kind>,
}

/// Parse the command line as `C`, as `C::try_parse` does; but `--generate KIND` (alone:
/// no subcommand or required argument is asked for beside it) prints what it names and
/// exits 0 (1 if stdout cannot be written).
pub(crate) fn try_parse<C: Parser>() -> Result<C, clap::Error> {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The flag is exclusive, which lifts required arguments but not a required
    // subcommand: look for it without one. Anything else is parsed as always.
    let lenient = C::command().subcommand_required(false);
    if let Ok(matches) = lenient.try_get_matches_from(&args)
        && let Some(kind) = matches.get_one::<Kind>("generate")
    {
        std::process::exit(print(C::command(), *kind));
    }
    C::try_parse_from(&args)
}

/// Write `kind` for `cmd` to stdout; the exit code.
fn print(mut cmd: clap::Command, kind: Kind) -> i32 {
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    let shell = match kind {
        Kind::Man => None,
        Kind::CompleteBash => Some(Shell::Bash),
        Kind::CompleteZsh => Some(Shell::Zsh),
        Kind::CompleteFish => Some(Shell::Fish),
    };
    let made = match shell {
        Some(shell) => {
            clap_complete::generate(shell, &mut cmd, &name, &mut out);
            Ok(())
        }
        None => man(cmd, &mut out),
    };
    let mut stdout = std::io::stdout().lock();
    match made
        .and_then(|()| stdout.write_all(&out))
        .and_then(|()| stdout.flush())
    {
        Ok(()) => 0,
        Err(e) => {
            #[allow(clippy::print_stderr)] // the flag's one error
            {
                eprintln!("{name}: --generate: cannot write to stdout: {e}");
            }
            1
        }
    }
}

/// One man page for `cmd` and all its subcommands: clap_mangen's sections for the
/// command (its SUBCOMMANDS list aside: it names pages of their own), then a section per
/// subcommand (`CERTTOOL CA CREATE`) with its synopsis, description and options as
/// subsections, then the command's closing text and version.
fn man(mut cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    cmd.build(); // the subcommands' full names (`certtool ca create`)
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    let mut subcommands = Vec::new();
    walk(&cmd, &mut subcommands);
    for sub in subcommands {
        let full = sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase();
        let page = clap_mangen::Man::new(sub);
        let mut section = Vec::new();
        page.render_synopsis_section(&mut section)?;
        page.render_description_section(&mut section)?;
        page.render_options_section(&mut section)?;
        writeln!(out, ".SH \"{full}\"")?;
        // Their `.SH` headings become subsections of this one.
        for line in String::from_utf8_lossy(&section).lines() {
            match line.strip_prefix(".SH ") {
                Some(heading) => writeln!(out, ".SS {heading}")?,
                None => writeln!(out, "{line}")?,
            }
        }
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        page.render_extra_section(out)?;
    }
    page.render_version_section(out)
}

/// Every subcommand below `cmd`, depth first in definition order, without clap's `help`.
fn walk(cmd: &clap::Command, into: &mut Vec<clap::Command>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        into.push(sub.clone());
        walk(sub, into);
    }
}
