//! The MCP tools: each parses its arguments (schemas derived from [`crate::params`]), calls
//! the client crate, and answers with structured JSON, or with a tool error (`isError`)
//! carrying banger's message. No call can end the server.

use std::path::Path;

use banger_api::methods;
use banger_api::system::Empty;
use banger_api::vm::{PublishedPort, Vm, VmCreateParams, VmDeleteParams, VmRef};
use banger_client::Client;
use banger_client::diff::{Format, Records};
use banger_client::run::{NoInterrupt, RunEvent, RunOptions};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;

use crate::capture::Capped;
use crate::guest::{self, ToolError, message};
use crate::params::{
    self, CreateArgs, DiffArgs, ExecArgs, ListDirArgs, NoArgs, OUTPUT_CAP, ReadFileArgs,
    SandboxArgs, WriteFileArgs,
};

/// What the server tells a client at `initialize`: the workflow, in a few lines.
const INSTRUCTIONS: &str = "banger runs disposable Linux sandboxes (microVMs). Workflow: \
sandbox_create (optionally copying a host directory in as a workspace at /root/<name>) → \
sandbox_exec commands in it (cwd = the workspace), sandbox_write_file / sandbox_read_file / \
sandbox_list_dir to edit and inspect files → sandbox_diff for the workspace's changes as a \
git patch → sandbox_delete when done. Sandboxes persist \
until deleted (sandbox_list shows them; so does `banger vm list` on the host). Network is \
limited to the public internet unless `net` says otherwise.";

/// The server: the daemon's client and the `vm.create` settings new sandboxes start from
/// (the CLI's config file `[vm]` and `net` sections).
#[derive(Clone)]
pub struct Sandboxes {
    client: Client,
    defaults: VmCreateParams,
    /// Where workspace baselines are recorded (`sandbox_diff`); `None`: not recorded.
    records: Option<Records>,
    tool_router: ToolRouter<Sandboxes>,
}

/// A sandbox in `sandbox_create` and `sandbox_list` answers.
#[derive(Debug, Serialize)]
struct Summary {
    name: String,
    state: banger_api::vm::VmState,
    image: String,
    net: String,
    published: Vec<PublishedPort>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

impl Summary {
    fn of(vm: &Vm) -> Summary {
        Summary {
            name: vm.name.clone(),
            state: vm.state,
            image: vm.image.clone(),
            net: vm.net.clone(),
            published: vm.published.clone(),
            created_at: vm.created_at.clone(),
            last_error: vm.last_error.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Created {
    #[serde(flatten)]
    sandbox: Summary,
    /// Where the workspace is in the guest, when one was copied.
    workspace: Option<String>,
}

/// Structured content (and its JSON text, for clients that read only text).
fn answer(value: &impl Serialize) -> Result<CallToolResult, ToolError> {
    let value = serde_json::to_value(value).map_err(|e| format!("encoding the answer: {e}"))?;
    Ok(CallToolResult::structured(value))
}

#[tool_router]
impl Sandboxes {
    pub fn new(client: Client, defaults: VmCreateParams, records: Option<Records>) -> Sandboxes {
        Sandboxes {
            client,
            defaults,
            records,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Create and start a sandbox (a Linux microVM; a few seconds). Optionally \
copy a host directory in as its workspace (/root/<dir name>): pass that path as `cwd` to \
sandbox_exec. Returns the sandbox's name (use it in every other tool), its state and the \
workspace path. The sandbox lives until sandbox_delete."
    )]
    async fn sandbox_create(
        &self,
        Parameters(args): Parameters<CreateArgs>,
    ) -> Result<CallToolResult, ToolError> {
        if let Some(name) = &args.name {
            banger_api::names::validate_name(name).map_err(|m| format!("name: {m}"))?;
        }
        let workspace = args
            .workspace
            .as_deref()
            .map(|p| banger_client::workspace::workspace(Path::new(p)))
            .transpose()
            .map_err(|e| message(&e))?;
        let ws_path = workspace.as_ref().map(|w| format!("/root/{}", w.name));
        let mut create = self.defaults.clone();
        if let Some(net) = args.net {
            create.net = Some(net.mode());
            create.net_from = Some("sandbox_create net".into());
        }
        create.allow.extend(args.allow);
        create.publish = args.ports.iter().map(|p| p.as_str().into()).collect();
        let options = RunOptions {
            image: args.image,
            name: args.name,
            rm: false,
            workspace,
            records: self.records.clone(),
            create,
        };
        let mut kept = None;
        let mut made = None;
        let ran = banger_client::run::run(
            &self.client,
            options,
            &mut NoInterrupt,
            |event| {
                if let RunEvent::Kept { name } = event {
                    kept = Some(name.to_string());
                }
            },
            async |_: &Client, vm: &Vm| {
                made = Some(Summary::of(vm));
                Ok(0)
            },
        )
        .await;
        match (ran, made) {
            (Ok(_), Some(sandbox)) => answer(&Created {
                sandbox,
                workspace: ws_path,
            }),
            (Ok(_), None) => Err("the sandbox was not made".into()),
            (Err(e), _) => Err(match kept {
                Some(name) => format!(
                    "{}; sandbox {name} is kept: delete it with sandbox_delete",
                    message(&e)
                ),
                None => message(&e),
            }),
        }
    }

    #[tool(
        description = "Run a command in a sandbox and wait for it: `argv` (no shell) or \
`command` (a `sh -c` line), with optional stdin text, cwd, env and timeout_secs (default 120, \
max 3600; the command is killed then). Returns exit_code, stdout and stderr; each stream \
keeps its first 1 MiB, then a '[banger: output truncated: …]' marker (stdout_bytes and \
stderr_bytes give the full sizes). Redirect big outputs to a file and read parts of it."
    )]
    async fn sandbox_exec(
        &self,
        Parameters(args): Parameters<ExecArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let command = guest::Command {
            argv: params::exec_argv(args.argv, args.command)?,
            env: params::exec_env(args.env)?,
            stdin: args.stdin,
            cwd: args.cwd,
            timeout: params::exec_timeout(args.timeout_secs)?,
        };
        let report = guest::run(&self.client, &args.sandbox, command).await?;
        answer(&report)
    }

    #[tool(
        description = "Read a text file from a sandbox (UTF-8, up to max_bytes: default 1 MiB). \
Binary or larger files are refused with a message; use sandbox_exec (`base64 FILE`, `head -c`) \
for those. Returns path, size, mode and content."
    )]
    async fn sandbox_read_file(
        &self,
        Parameters(args): Parameters<ReadFileArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let max = params::read_limit(args.max_bytes)?;
        answer(&guest::read_file(&self.client, &args.sandbox, &args.path, max).await?)
    }

    #[tool(
        description = "Write a text file in a sandbox (replacing it; parent directories are \
made), with an optional octal mode such as \"755\". Returns the path and its size."
    )]
    async fn sandbox_write_file(
        &self,
        Parameters(args): Parameters<WriteFileArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let (dir, name) = params::split_file_path(&args.path)?;
        let mode = params::file_mode(args.mode.as_deref())?;
        if args.content.len() > params::MAX_WRITE_BYTES {
            return Err(format!(
                "content is {} bytes, over the limit of {}",
                args.content.len(),
                params::MAX_WRITE_BYTES
            ));
        }
        guest::write_file(
            &self.client,
            &args.sandbox,
            &dir,
            &name,
            args.content.as_bytes(),
            mode,
        )
        .await?;
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        answer(&serde_json::json!({ "path": path, "size": args.content.len() }))
    }

    #[tool(
        description = "List a directory in a sandbox (default /root): each entry's name, \
type (file, dir, symlink, other), size and octal mode."
    )]
    async fn sandbox_list_dir(
        &self,
        Parameters(args): Parameters<ListDirArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let path = banger_client::transfer::guest_absolute(args.path.as_deref().unwrap_or(""));
        let entries = guest::list_dir(&self.client, &args.sandbox, &path).await?;
        answer(&serde_json::json!({ "path": path, "entries": entries }))
    }

    #[tool(
        description = "List every sandbox (also those made outside MCP): name, state, image, network, published ports."
    )]
    async fn sandbox_list(
        &self,
        Parameters(NoArgs {}): Parameters<NoArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let list = self
            .client
            .call::<methods::vm::List>(&Empty {})
            .await
            .map_err(|e| message(&e.into()))?;
        let sandboxes: Vec<Summary> = list.vms.iter().map(Summary::of).collect();
        answer(&serde_json::json!({ "sandboxes": sandboxes }))
    }

    #[tool(
        description = "Everything banger knows about one sandbox: state, resources, network policy, ports, disks, boot stages, last error."
    )]
    async fn sandbox_show(
        &self,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let vm = self
            .client
            .call::<methods::vm::Show>(&VmRef { vm: args.sandbox })
            .await
            .map_err(|e| message(&e.into()))?;
        answer(&vm)
    }

    #[tool(
        description = "The sandbox's changes to its workspace as a git patch (binary-safe) against what was copied in: modified, added, deleted, renamed and mode-changed files. Apply it on the host with `git apply --index PATCH` in the repository (or `git apply` in a plain directory). `stat: true` gives the summary only. Empty when nothing changed."
    )]
    async fn sandbox_diff(
        &self,
        Parameters(args): Parameters<DiffArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let records = self
            .records
            .as_ref()
            .ok_or_else(|| "this server records no workspaces".to_string())?;
        let prepared = banger_client::diff::prepare(&self.client, records, &args.sandbox, None)
            .await
            .map_err(|e| message(&e))?;
        let format = if args.stat {
            Format::Stat
        } else {
            Format::Patch
        };
        let patch = tokio::task::spawn_blocking(move || {
            let mut out = Capped::new(OUTPUT_CAP);
            prepared.write(format, &mut out).map(|()| out.finish())
        })
        .await
        .map_err(|e| format!("the diff stopped: {e}"))?
        .map_err(|e| message(&e))?;
        answer(&serde_json::json!({
            "sandbox": args.sandbox,
            "empty": patch.total_bytes == 0,
            "patch": patch,
        }))
    }

    #[tool(
        description = "Delete a sandbox, stopping it first if it runs; its disks and files are gone."
    )]
    async fn sandbox_delete(
        &self,
        Parameters(args): Parameters<SandboxArgs>,
    ) -> Result<CallToolResult, ToolError> {
        let params = VmDeleteParams {
            vm: args.sandbox.clone(),
            force: true,
        };
        self.client
            .call::<methods::vm::Delete>(&params)
            .await
            .map_err(|e| message(&e.into()))?;
        answer(&serde_json::json!({ "deleted": args.sandbox }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Sandboxes {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("banger", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_a_description_and_an_object_schema() {
        let tools = Sandboxes::tool_router().list_all();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "sandbox_create",
                "sandbox_delete",
                "sandbox_diff",
                "sandbox_exec",
                "sandbox_list",
                "sandbox_list_dir",
                "sandbox_read_file",
                "sandbox_show",
                "sandbox_write_file"
            ]
        );
        for tool in &tools {
            let description = tool.description.as_deref().unwrap_or_default();
            assert!(description.len() > 40, "{}: {description:?}", tool.name);
            assert_eq!(
                tool.input_schema.get("type"),
                Some(&serde_json::json!("object")),
                "{}",
                tool.name
            );
        }
    }

    #[test]
    fn required_arguments_are_marked_and_optional_ones_documented() {
        let router = Sandboxes::tool_router();
        let exec = router.get("sandbox_exec").expect("sandbox_exec");
        assert_eq!(
            exec.input_schema.get("required"),
            Some(&serde_json::json!(["sandbox"]))
        );
        let props = exec.input_schema["properties"]
            .as_object()
            .expect("properties");
        for arg in ["argv", "command", "stdin", "cwd", "env", "timeout_secs"] {
            let description = props[arg]["description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{arg} has no description");
        }
        let create = router.get("sandbox_create").expect("sandbox_create");
        assert_eq!(
            create.input_schema.get("required"),
            None,
            "every argument is optional"
        );
        let net = serde_json::to_string(&create.input_schema["properties"]["net"]).expect("json");
        for mode in ["public", "host", "any", "none"] {
            assert!(net.contains(mode), "{net}");
        }
    }
}
