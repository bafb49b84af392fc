//! `banger vm list`

use banger_api::methods;
use banger_api::system::Empty;
use banger_api::vm::{Vm, VmList};

use crate::Context;
use crate::output::{self, Style};
use banger_client::Client;

/// What `vm list` prints when there are no VMs.
pub const EMPTY_HINT: &str = "no VMs; create one with: banger vm create NAME --image IMG";

pub async fn run(ctx: &Context, client: &Client) -> anyhow::Result<u8> {
    let list: VmList = client.call::<methods::vm::List>(&Empty {}).await?;
    if ctx.json {
        // The whole result, `{"vms": […]}`, as the API returns it.
        output::print_json(&list)?;
    } else {
        print!("{}", render(&ctx.style, &list.vms));
    }
    Ok(0)
}

/// The human table (or the hint when there is nothing to show).
pub fn render(style: &Style, vms: &[Vm]) -> String {
    if vms.is_empty() {
        return format!("{EMPTY_HINT}\n");
    }
    let rows: Vec<Vec<String>> = vms.iter().map(row).collect();
    output::table(
        style,
        &[
            "NAME", "STATE", "IMAGE", "CPUS", "MEMORY", "DISK", "CREATED",
        ],
        &rows,
    )
}

fn row(vm: &Vm) -> Vec<String> {
    vec![
        vm.name.clone(),
        vm.state.as_str().to_string(),
        vm.image.clone(),
        vm.cpus.to_string(),
        output::human_bytes(vm.memory_mib.saturating_mul(1 << 20)),
        output::human_bytes(
            vm.root_disk
                .allocated_bytes
                .saturating_add(vm.work_disk.allocated_bytes),
        ),
        vm.created_at.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use banger_api::vm::VmState;

    use super::*;
    use crate::commands::vm::testing::sample_vm;

    #[test]
    fn the_table_shows_allocated_disk() {
        let mut other = sample_vm();
        other.name = "scratch".into();
        other.state = VmState::Stopped;
        other.cpus = 1;
        other.memory_mib = 512;
        other.pid = None;
        let text = render(&Style::plain(), &[sample_vm(), other]);
        assert_eq!(
            text,
            "NAME     STATE    IMAGE            CPUS  MEMORY     DISK     CREATED\n\
             dev      running  debian-bookworm  2     1.0 GiB    4.0 MiB  2025-05-01T10:00:00Z\n\
             scratch  stopped  debian-bookworm  1     512.0 MiB  4.0 MiB  2025-05-01T10:00:00Z\n"
        );
    }

    #[test]
    fn an_empty_list_gives_a_hint() {
        assert_eq!(
            render(&Style::plain(), &[]),
            "no VMs; create one with: banger vm create NAME --image IMG\n"
        );
    }

    #[test]
    fn json_is_the_vm_list() {
        let list = VmList {
            vms: vec![sample_vm()],
        };
        let text = output::json_string(&list).expect("json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        let first = &v["vms"][0];
        assert_eq!(first["name"], "dev");
        assert_eq!(first["state"], "running");
        assert_eq!(first["memory_mib"], 1024);
        assert_eq!(first["root_disk"]["allocated_bytes"], 3 << 20);
        assert_eq!(first["stages"][2]["stage"], "ready");
        let empty = output::json_string(&VmList { vms: Vec::new() }).expect("json");
        let v: serde_json::Value = serde_json::from_str(&empty).expect("valid json");
        assert_eq!(v, serde_json::json!({ "vms": [] }));
    }
}
