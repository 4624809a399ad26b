//! The `hamlet` binary: everything lives in the library; see `hamlet::cli`.

fn main() -> std::process::ExitCode {
    hamlet::cli::main()
}
