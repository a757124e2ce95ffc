//! The `ferry` binary: parses the command line, runs it, and turns any failure into
//! `error: <message>`, a hint, and exit code 1.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use ferry::cli::{Cli, Command, LogFormat};

/// mimalloc rather than glibc's malloc (docs/decisions.md §14).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` are not errors; a bad command line exits 1 like any failure.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match &cli.command {
        Command::Server(args) => ferry::server::init_logging(args.log_format, "info"),
        // Client commands only log what RUST_LOG asks for; their output is the answer itself.
        _ => ferry::server::init_logging(LogFormat::Text, "warn"),
    }
    // Not locked for the whole run: the progress bar draws on stdout too.
    let mut stdout = std::io::stdout();
    let interactive = stdout.is_terminal();
    let mut io = ferry::Io {
        out: &mut stdout,
        interactive,
        home: ferry::config::home_dir(),
    };
    match ferry::run(cli, &mut io).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            eprintln!("hint: {}", ferry::hint_for(&err));
            ExitCode::FAILURE
        }
    }
}
