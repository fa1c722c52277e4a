//! The `rotor` command line: runs the rotation steps in-process against AWS or the local stack.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    rotor::cli::main().await
}
