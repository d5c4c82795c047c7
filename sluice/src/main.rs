//! The `sluice` binary: the CLI, and every component the local platform starts by re-running
//! this executable (`sluice activator`, `sluice queue-proxy`).

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}
