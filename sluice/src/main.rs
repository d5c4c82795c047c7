//! The `sluice` binary: the CLI, and every component the local platform starts by re-running
//! this executable (`sluice activator`, `sluice queue-proxy`).

/// mimalloc hands freed memory back to the system within milliseconds. glibc's malloc kept
/// what a pass over 10,000 objects freed: the daemon stayed hundreds of MB above its live
/// heap, and every replica it forked copied the page tables of all of it
/// (`bench/results/2026-12-03-scale.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_cli::main()
}
