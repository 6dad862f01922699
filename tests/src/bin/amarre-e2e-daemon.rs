//! The daemon under test (identical to the `amarre` binary).

fn main() {
    amarre::cli::main();
}
