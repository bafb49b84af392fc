fn main() -> std::process::ExitCode {
    banger_cli::main()
}
