//! The `amarre` binary.

fn main() {
    amarre::cli::main();
}
