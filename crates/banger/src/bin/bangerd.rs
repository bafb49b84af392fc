fn main() -> std::process::ExitCode {
    // A VM's DNS forwarder is this binary re-executed (crates/vmm/src/netns/forwarder.rs).
    if let Some(code) = banger_vmm::netns::forwarder::run_if_forwarder() {
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    banger_daemon::cli::main()
}
