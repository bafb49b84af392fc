fn main() -> std::process::ExitCode {
    banger_daemon::cli::main()
}
