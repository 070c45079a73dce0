//! The `parallax` command line; everything lives in [`parallax_storage_host::cli`].

fn main() {
    std::process::exit(parallax_storage_host::cli::main())
}
