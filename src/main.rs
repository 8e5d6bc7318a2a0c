use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ledger::cli::Cli::parse();
    ledger::cli::init_tracing();
    match ledger::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
