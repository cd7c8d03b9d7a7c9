//! `zatabase`: parse the command line, start the runtime, run.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a request's memory is often freed on
/// another worker than the one that allocated it, and glibc then takes the
/// other arena's lock (bench/RESULTS.md, 2026-11-27 third session).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    zatabase::main(zatabase::config::Cli::parse())
}
