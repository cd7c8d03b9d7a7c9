//! `zatabase`: parse the command line, start the runtime, run.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = zatabase::config::Cli::parse();
    zatabase::init_logging(std::env::var_os("ZATABASE_LOG_JSON").is_some());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    zatabase::exit_code(runtime.block_on(zatabase::run(cli)))
}
