//! The hello sample as a program.

fn main() -> std::process::ExitCode {
    hello::main_from_env()
}
