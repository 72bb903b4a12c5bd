//! The `berth` binary: all work is in the library.

fn main() -> std::process::ExitCode {
    berth::main()
}
