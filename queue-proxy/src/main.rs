//! The queue-proxy binary: configuration from the environment (Knative's variable names).

fn main() -> std::process::ExitCode {
    sluice_queue_proxy::main_from_env()
}
