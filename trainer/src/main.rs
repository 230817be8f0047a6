//! `flywheel-trainer`: see the library's `cli` module.

fn main() -> std::process::ExitCode {
    flywheel_trainer::cli::main()
}
