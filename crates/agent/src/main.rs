//! `/init` of banger's guests; see the crate docs of `banger_agent`.

fn main() {
    banger_agent::boot::main()
}
