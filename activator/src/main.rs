//! The activator binary: routing from the local daemon's socket, listener from the environment.

fn main() -> std::process::ExitCode {
    sluice_activator::main_from_env()
}
