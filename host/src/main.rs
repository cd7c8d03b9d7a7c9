//! `zatabase`: parse the command line, start the runtime, run.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = zatabase::config::Cli::parse();
    zatabase::init_logging(std::env::var_os("ZATABASE_LOG_JSON").is_some());
    zatabase::main(cli)
}
