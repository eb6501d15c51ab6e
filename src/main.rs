fn main() -> std::process::ExitCode {
    healgate::cli::main()
}
