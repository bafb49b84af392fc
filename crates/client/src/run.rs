//! `vm run`'s client half: the image (the daemon's default, pulled on first use, unless one
//! is given), a lease for `--rm`, the VM (named by the daemon unless a name is given), the
//! workspace copied in (and its baseline recorded for `vm diff`, see [`crate::diff`]),
//! then the front end's step (an exec, or printing the name), and
//! `--rm`'s deletion whatever happened. The front end maps its flags and config file into
//! [`RunOptions`], renders [`RunEvent`]s and brings the final step.

use std::future::Future;

use banger_api::ErrorCode;
use banger_api::event::OpEvent;
use banger_api::image::{Image, ImageRef, KernelChoice};
use banger_api::methods;
use banger_api::pull::ImagePullParams;
use banger_api::system::Empty;
use banger_api::vm::{Vm, VmCreateParams, VmDefaults, VmDeleteParams, VmRef};

use crate::Error;
use crate::diff::Records;
use crate::lease::Lease;
use crate::transport::{Client, ClientError};
use crate::workspace::Workspace;

/// What to run. `create` carries the resources; its `name`, `name_hint`, `image`,
/// `auto_remove` and `lease` are set by [`run`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Image name or id; `None`: the daemon's default (`vm.defaults`), pulled on first use.
    pub image: Option<String>,
    /// `None`: the daemon picks `<workspace name or "run">-<4 hex>`.
    pub name: Option<String>,
    /// Delete the VM when done, whatever happened (the daemon also does when this process
    /// goes: a `vm.hold` lease).
    pub rm: bool,
    pub workspace: Option<Workspace>,
    /// Where to record the workspace's baseline for `vm diff` (`None`: not recorded).
    pub records: Option<Records>,
    pub create: VmCreateParams,
}

/// What happens, for the front end to show.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The default image is not there yet and is pulled now (once).
    PullingDefault(&'a VmDefaults),
    /// Progress of the pull or of the VM's boot.
    Progress(&'a OpEvent),
    /// A streamed step (pull or create) ended: progress displays can close.
    StepDone,
    Running(&'a Vm),
    /// The workspace is in, at `/root/<name>`.
    Copied {
        files: u64,
        bytes: u64,
        elapsed: std::time::Duration,
        name: &'a str,
    },
    /// The workspace's baseline could not be recorded: `vm diff` will not work.
    NotRecorded {
        error: String,
    },
    /// The run failed and the VM stays (no `--rm`).
    Kept {
        name: &'a str,
    },
    /// `--rm` could not delete the VM.
    DeleteFailed {
        name: &'a str,
        error: String,
    },
}

/// A front end's interruption (Ctrl-C, SIGTERM): it ends the step at hand, and `--rm`
/// still deletes the VM.
pub trait Interrupt {
    fn interrupted(&mut self) -> impl Future<Output = ()>;
}

/// No interruption but the caller dropping the future.
pub struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn interrupted(&mut self) -> impl Future<Output = ()> {
        std::future::pending()
    }
}

/// Runs `step`, or ends it with [`Error::Interrupted`] when `interrupt` fires first.
pub async fn guard<T, E: Into<Error>>(
    interrupt: &mut impl Interrupt,
    what: &str,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    tokio::select! {
        r = step => r.map_err(Into::into),
        () = interrupt.interrupted() => Err(Error::Interrupted(what.to_string())),
    }
}

/// Runs it all; `then` is the front end's last step with the running VM (the exec, or
/// printing its name), and its result is the run's.
pub async fn run(
    client: &Client,
    opts: RunOptions,
    interrupt: &mut impl Interrupt,
    mut on_event: impl FnMut(RunEvent<'_>),
    then: impl AsyncFnOnce(&Client, &Vm) -> anyhow::Result<u8>,
) -> Result<u8, Error> {
    let rm = opts.rm;
    let records = opts.records.clone();
    // Dropped last: the daemon's deletion of a --rm VM is the fallback of ours below.
    let mut lease = None;
    let mut made: Option<String> = None;
    let mut made_id: Option<String> = None;
    let outcome = steps(
        client,
        opts,
        interrupt,
        &mut on_event,
        (&mut made, &mut made_id),
        &mut lease,
        then,
    )
    .await;
    let Some(name) = made else {
        return outcome;
    };
    if rm {
        match delete(client, &name).await {
            Ok(()) => {
                if let (Some(records), Some(id)) = (&records, made_id) {
                    records.forget(&id);
                }
            }
            Err(e) => on_event(RunEvent::DeleteFailed {
                name: &name,
                error: format!("{e:#}"),
            }),
        }
    } else if outcome.is_err()
        && client
            .call::<methods::vm::Show>(&VmRef { vm: name.clone() })
            .await
            .is_ok()
    {
        on_event(RunEvent::Kept { name: &name });
    }
    outcome
}

async fn steps(
    client: &Client,
    opts: RunOptions,
    interrupt: &mut impl Interrupt,
    on_event: &mut impl FnMut(RunEvent<'_>),
    (made, made_id): (&mut Option<String>, &mut Option<String>),
    lease: &mut Option<Lease>,
    then: impl AsyncFnOnce(&Client, &Vm) -> anyhow::Result<u8>,
) -> Result<u8, Error> {
    // 1. The image.
    let image = match (&opts.image, &opts.create.from) {
        (Some(i), _) => i.clone(),
        // A fork's image is its snapshot's.
        (None, Some(_)) => String::new(),
        (None, None) => default_image(client, interrupt, on_event).await?,
    };
    // 2. The VM. A name already taken is refused before anything (so --rm never deletes
    // a VM that was there before).
    if let Some(name) = &opts.name {
        match client
            .call::<methods::vm::Show>(&VmRef { vm: name.clone() })
            .await
        {
            Ok(_) => {
                return Err(anyhow::anyhow!(
                    "a vm named {name} already exists; choose another --name or delete it first"
                )
                .into());
            }
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut params = opts.create;
    params.name = opts.name.clone().unwrap_or_default();
    params.name_hint = opts.workspace.as_ref().map(|w| w.name.clone());
    params.image = image;
    // --rm: the daemon deletes the VM when it stops or when this process goes, however.
    if opts.rm {
        let opened = guard(interrupt, "opening a lease", Lease::open(client)).await?;
        params.auto_remove = true;
        params.lease = Some(opened.id().to_string());
        *lease = Some(opened);
    }
    // A named VM half-made by an interrupted create is ours to delete; an unnamed one the
    // daemon discards (and a lease's VMs go with the lease).
    *made = opts.name.clone();
    let created = guard(
        interrupt,
        "creating the vm",
        client.call_streaming::<methods::vm::Create>(&params, |e| on_event(RunEvent::Progress(e))),
    )
    .await;
    on_event(RunEvent::StepDone);
    let vm = match created {
        Ok(vm) => vm,
        Err(e) => {
            // Someone else's VM of that name (a race): not ours to delete.
            if e.api()
                .is_some_and(|api| api.code == ErrorCode::AlreadyExists)
            {
                *made = None;
            }
            return Err(e);
        }
    };
    *made = Some(vm.name.clone());
    *made_id = Some(vm.id.clone());
    on_event(RunEvent::Running(&vm));
    // 3. The workspace.
    if let Some(ws) = &opts.workspace {
        let started = std::time::Instant::now();
        let up = guard(
            interrupt,
            "copying the workspace",
            crate::transfer::upload(
                client,
                &vm.name,
                "/root",
                std::ffi::OsStr::new(&ws.name),
                ws.tree.clone(),
            ),
        )
        .await?;
        on_event(RunEvent::Copied {
            files: up.packed.files,
            bytes: up.packed.bytes,
            elapsed: started.elapsed(),
            name: &ws.name,
        });
        if let Some(records) = &opts.records {
            let guest_path = format!("/root/{}", ws.name);
            let recorded = guard(
                interrupt,
                "recording the workspace",
                records.record_and_prune(client, &vm.id, &guest_path, ws),
            )
            .await;
            if let Err(e) = recorded {
                if matches!(e, Error::Interrupted(_)) {
                    return Err(e);
                }
                on_event(RunEvent::NotRecorded {
                    error: format!("{:#}", anyhow::Error::new(e)),
                });
            }
        }
    }
    // 4. The front end's step.
    Ok(then(client, &vm).await?)
}

/// The daemon's default image's local name, pulled first when there is no such image.
async fn default_image(
    client: &Client,
    interrupt: &mut impl Interrupt,
    on_event: &mut impl FnMut(RunEvent<'_>),
) -> Result<String, Error> {
    let defaults = client.call::<methods::vm::Defaults>(&Empty {}).await?;
    match client
        .call::<methods::image::Show>(&ImageRef {
            image: defaults.image.clone(),
        })
        .await
    {
        Ok(shown) => return Ok(shown.image.name),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    on_event(RunEvent::PullingDefault(&defaults));
    let params = ImagePullParams {
        reference: crate::local_source_absolute(&defaults.image_ref)?,
        name: Some(defaults.image.clone()),
        kernel: KernelChoice {
            kernel_ref: Some(defaults.kernel.clone()),
            ..KernelChoice::default()
        },
        ..ImagePullParams::default()
    };
    let pulled = guard(
        interrupt,
        "pulling the default image",
        client.call_streaming::<methods::image::Pull>(&params, |e| on_event(RunEvent::Progress(e))),
    )
    .await;
    on_event(RunEvent::StepDone);
    let image: Image = pulled.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "pulling the default image {} (set default_image in the daemon's config file, or pass --image)",
            defaults.image_ref
        ))
    })?;
    Ok(image.name)
}

async fn delete(client: &Client, name: &str) -> Result<(), ClientError> {
    let params = VmDeleteParams {
        vm: name.to_string(),
        force: true,
    };
    match client.call::<methods::vm::Delete>(&params).await {
        Ok(_) => Ok(()),
        Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
