//! `/init` of banger's guests (see the crate docs of `banger_agent`), and their `modprobe`
//! when run under that name from the modules disk.

fn main() {
    let mut argv = std::env::args_os();
    if banger_agent::modprobe::invoked_as(argv.next().as_ref()) {
        let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(banger_agent::modprobe::main(&args));
    }
    banger_agent::boot::main()
}
