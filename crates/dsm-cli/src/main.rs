//! `dsm`, the command-line front end of the dsm library: parse, run, print, exit.
//!
//! Everything a library user needs lives in the `dsm` crate; this binary only turns arguments
//! into library calls, writes the output files, draws progress, and maps failures to exit codes
//! (see [`exit`]). All output goes through [`printer`].

mod args;
mod cache;
mod exit;
mod fetch;
mod output;
mod printer;
mod progress;
mod signal;
mod summary;
mod sync;

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};
use crate::exit::Exit;
use crate::printer::Printer;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints usage errors to stderr (exit 2) and --help/--version to stdout (exit 0).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    std::panic::set_hook(Box::new(printer::report_panic));
    init_logging(cli.verbose, cli.quiet);
    let printer = Printer::new(cli.quiet, cli.verbose > 0);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&anyhow::Error::from(e).context("starting the async runtime"));
            return Exit::Local.into();
        }
    };
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(run(&cli, printer))));
    // Whatever is still running (a writer told to stop, a manager past its deadline) gets a moment,
    // never more: a second Ctrl-C must end the process promptly.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match outcome {
        Ok(Ok(())) => Exit::Success.into(),
        Ok(Err(err)) => {
            let exit = exit::for_error(&err);
            if exit.reports_error() {
                printer.error(&err);
            }
            exit.into()
        }
        // The panic hook has already printed one line.
        Err(_) => Exit::Local.into(),
    }
}

async fn run(cli: &Cli, printer: Printer) -> anyhow::Result<()> {
    match &cli.command {
        Command::Fetch(args) => {
            let mut signals = signal::Signals::new()?;
            fetch::run(args, printer, &mut signals).await
        }
        Command::Cache(command) => cache::run(command, printer).await,
        Command::Sync(args) => {
            let mut signals = signal::Signals::new()?;
            sync::run(args, printer, &mut signals).await
        }
        Command::Symbols(args) => sync::symbols(args, printer).await,
    }
}

/// Logs to stderr; `DSM_LOG` (an `EnvFilter` directive) overrides the level chosen by -v/-q.
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = std::env::var("DSM_LOG")
        .ok()
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .try_init();
}
