//! `soft`: convert SOFT checkpoints into model blobs, inspect, plan, run, verify and
//! evaluate them. Everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    soft_host::cli::main()
}
