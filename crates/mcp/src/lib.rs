//! banger-mcp: `banger mcp`, a Model Context Protocol server on stdio for AI agents. Its
//! tools (`sandbox_create`, `sandbox_exec`, `sandbox_read_file`, `sandbox_write_file`,
//! `sandbox_list_dir`, `sandbox_list`, `sandbox_show`, `sandbox_delete`) drive ordinary
//! VMs through the client crate ([`banger_client`]); the protocol is the official SDK's
//! (`rmcp`). Only JSON-RPC goes to stdout.

mod capture;
mod guest;
mod params;
mod server;

use anyhow::Context as _;
use banger_api::vm::VmCreateParams;
use banger_client::Client;
use rmcp::ServiceExt as _;

pub use server::Sandboxes;

/// Serves MCP on this process's stdin and stdout until the client closes them. `defaults`
/// are the `vm.create` settings every sandbox starts from (name, image and workspace are
/// the tool's).
pub async fn serve_stdio(
    client: Client,
    defaults: VmCreateParams,
    records: Option<banger_client::diff::Records>,
) -> anyhow::Result<()> {
    let running = Sandboxes::new(client, defaults, records)
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP session")?;
    running.waiting().await.context("serving MCP")?;
    Ok(())
}
