//! The `ferry` binary: runs [`ferry_cli::main`] and turns its result into an exit code
//! (0 ok, 1 failure, 2 usage, 3 cannot reach the server).

use std::process::ExitCode;

fn main() -> ExitCode {
    match ferry_cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.already_reported() {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
