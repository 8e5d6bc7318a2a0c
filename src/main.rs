use clap::Parser;

/// mimalloc rather than glibc's malloc: the engine, the projectors and the
/// service allocate many small, short-lived buffers across threads, where
/// glibc spent ~9% of all CPU (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    restore_sigpipe();
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

/// Rust ignores SIGPIPE, so `ledger demo | head -2` would make `println!`
/// panic once `head` exits. A command-line tool should end quietly as
/// others do: with SIGPIPE's default action back, a closed pipe ends the
/// process without a word (as it does for grep or ripgrep).
fn restore_sigpipe() {
    // SAFETY: called first in main, before any thread or handler exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
