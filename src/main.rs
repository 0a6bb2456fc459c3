//! Thin entry point: parse the command line, run it, map the error to an exit code.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = vistter_agent::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(vistter_agent::cli::execute(cli));
    // Do not wait for stray blocking tasks (e.g. a stdin read) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
