//! The sandboxes this server made: each is a VM created under the server's `vm.hold`
//! lease (so the daemon deletes them if the server goes, however it goes), with what E2B
//! keeps beside it (template, metadata, environment, deadline, envd access token) and its
//! processes. A reaper ends each sandbox at its deadline: killed, or paused when it was
//! created with `autoPause`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banger_api::ErrorCode;
use banger_api::image::{ImageRef, KernelChoice};
use banger_api::methods;
use banger_api::pull::ImagePullParams;
use banger_api::system::Empty;
use banger_api::vm::{Vm, VmCreateParams, VmDeleteParams, VmRef, VmState};
use banger_client::lease::Lease;
use banger_client::{Client, ClientError};
use hyper::StatusCode;

use crate::process::Processes;
use crate::watch::Watchers;

/// The template SDKs ask for when given none: the daemon's default image.
pub const DEFAULT_TEMPLATE: &str = "base";
/// The envd version we report: the SDK enables what envd had by then (stdin, the default
/// user, closing stdin, octet-stream uploads) and nothing newer (file metadata, watch
/// options), which we do not implement.
pub const ENVD_VERSION: &str = "0.5.7";
/// E2B's default time to live when a create names none.
const DEFAULT_TIMEOUT_SECS: u64 = 15;
/// How often the reaper looks for sandboxes past their deadline.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// A REST failure: the status and the message of E2B's `{code, message}` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RestError {
    pub status: StatusCode,
    pub message: String,
}

impl RestError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        RestError {
            status,
            message: message.into(),
        }
    }

    fn not_found(id: &str) -> Self {
        RestError::new(
            StatusCode::NOT_FOUND,
            format!("sandbox {} not found", crate::shown(id, 80)),
        )
    }

    fn daemon(what: &str, e: &ClientError) -> Self {
        let status = match e {
            ClientError::Api(api) => match api.code {
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
                ErrorCode::AlreadyRunning | ErrorCode::InUse => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match e {
            ClientError::Api(api) => banger_api::text::visible(&api.message).into_owned(),
            e => format!("{e:#}"),
        };
        RestError::new(status, format!("{what}: {message}"))
    }
}

/// What a create asks for (E2B's `NewSandbox`; what we do not implement is ignored).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSandbox {
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    pub timeout: Option<u64>,
    #[serde(default)]
    pub auto_pause: bool,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// One sandbox.
pub struct Sandbox {
    /// The sandbox id, which is the VM's name.
    pub id: String,
    /// The template as the client named it.
    pub template: String,
    /// The image it resolved to.
    pub image: String,
    /// The envd access token the SDK sends back as `X-Access-Token`.
    pub token: String,
    pub metadata: BTreeMap<String, String>,
    /// Environment of every process started in it.
    pub env: BTreeMap<String, String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub started_at: SystemTime,
    pub auto_pause: bool,
    life: Mutex<Life>,
    /// Busy and total CPU seconds at the last metrics look.
    cpu_seen: Mutex<(f64, f64)>,
    pub processes: Processes,
    pub watchers: Watchers,
}

#[derive(Debug, Clone, Copy)]
struct Life {
    end_at: SystemTime,
    paused: bool,
}

impl Sandbox {
    pub fn end_at(&self) -> SystemTime {
        self.life().end_at
    }

    pub fn paused(&self) -> bool {
        self.life().paused
    }

    fn life(&self) -> Life {
        *self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Life)) {
        f(&mut self.life.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The registry of sandboxes, and the daemon they live in.
pub struct Sandboxes {
    client: Client,
    lease: Lease,
    defaults: VmCreateParams,
    map: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// One template pull at a time (two creates of a new reference pull it once).
    pulling: tokio::sync::Mutex<()>,
}

impl Sandboxes {
    /// Opens the lease every sandbox is created under.
    pub async fn new(client: Client, defaults: VmCreateParams) -> anyhow::Result<Arc<Sandboxes>> {
        let lease = Lease::open(&client).await?;
        Ok(Arc::new(Sandboxes {
            client,
            lease,
            defaults,
            map: Mutex::new(HashMap::new()),
            pulling: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Sandbox>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Result<Arc<Sandbox>, RestError> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| RestError::not_found(id))
    }

    /// Every sandbox, newest first.
    pub fn all(&self) -> Vec<Arc<Sandbox>> {
        let mut all: Vec<_> = self.map().values().cloned().collect();
        all.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.id.cmp(&b.id)));
        all
    }

    /// Creates and boots a sandbox.
    pub async fn create(&self, request: NewSandbox) -> Result<Arc<Sandbox>, RestError> {
        if !self.lease.is_held() {
            return Err(RestError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon ended this server's lease (did it restart?): restart banger serve",
            ));
        }
        let template = if request.template_id.is_empty() {
            DEFAULT_TEMPLATE.to_string()
        } else {
            request.template_id
        };
        let image = self.resolve_template(&template).await?;
        let id = format!("e2b-{}", random_hex(6)?);
        let token = random_hex(24)?;
        let params = VmCreateParams {
            name: id.clone(),
            image: image.clone(),
            auto_remove: true,
            lease: Some(self.lease.id().to_string()),
            ..self.defaults.clone()
        };
        let vm: Vm = self
            .client
            .call_streaming::<methods::vm::Create>(&params, |_| {})
            .await
            .map_err(|e| RestError::daemon(&format!("creating sandbox from {template}"), &e))?;
        let now = SystemTime::now();
        let timeout = request.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        let sandbox = Arc::new(Sandbox {
            id: id.clone(),
            template,
            image,
            token,
            metadata: request.metadata.unwrap_or_default(),
            env: request.env_vars.unwrap_or_default(),
            cpus: vm.cpus,
            memory_mib: vm.memory_mib,
            disk_mib: vm.root_disk.apparent_bytes >> 20,
            started_at: now,
            auto_pause: request.auto_pause,
            life: Mutex::new(Life {
                end_at: now + Duration::from_secs(timeout),
                paused: false,
            }),
            cpu_seen: Mutex::new((0.0, 0.0)),
            processes: Processes::default(),
            watchers: Watchers::default(),
        });
        self.map().insert(id, sandbox.clone());
        Ok(sandbox)
    }

    /// The image a template names: `base` is the daemon's default image (pulled on first
    /// use, as `vm run` does), an image name or id is itself, and a registry reference
    /// (`debian:bookworm`, `host/repo:tag`) is the image pulled from it, pulled on first use
    /// (found again by its recorded source, so two references that derive the same name
    /// never stand for each other).
    async fn resolve_template(&self, template: &str) -> Result<String, RestError> {
        // An image name (the common case) costs one lookup; the defaults only when needed.
        if template != DEFAULT_TEMPLATE
            && let Some(found) = self.image(template).await?
        {
            return Ok(found);
        }
        let defaults = self
            .client
            .call::<methods::vm::Defaults>(&Empty {})
            .await
            .map_err(|e| RestError::daemon("reading the daemon's defaults", &e))?;
        if template == DEFAULT_TEMPLATE {
            if let Some(found) = self.image(&defaults.image).await? {
                return Ok(found);
            }
            let _one_pull = self.pulling.lock().await;
            return self
                .pull(&defaults.image_ref, &defaults.image, &defaults.kernel)
                .await;
        }
        let shown = crate::shown(template, 200);
        let local = ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .any(|p| template.starts_with(p));
        let reference = match banger_oci::reference::Reference::parse(template) {
            Ok(reference) if !local => reference,
            _ => {
                return Err(RestError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "template {shown}: no such image (pull one with `banger image pull REF \
                         --name {shown}`, or give an image reference such as debian:bookworm)"
                    ),
                ));
            }
        };
        let canonical = reference.to_string();
        let _one_pull = self.pulling.lock().await;
        let images = self
            .client
            .call::<methods::image::List>(&Empty {})
            .await
            .map_err(|e| RestError::daemon("listing images", &e))?
            .images;
        if let Some(pulled) = images
            .iter()
            .find(|i| i.source_ref.as_deref() == Some(canonical.as_str()))
        {
            return Ok(pulled.name.clone());
        }
        let mut name = banger_oci::reference::default_image_name(&reference);
        if images.iter().any(|i| i.name == name) {
            name = format!("{name}-{:08x}", fnv1a(&canonical));
        }
        self.pull(template, &name, &defaults.kernel).await
    }

    /// Pulls `reference` as image `name`, booting `kernel`.
    async fn pull(&self, reference: &str, name: &str, kernel: &str) -> Result<String, RestError> {
        let params = ImagePullParams {
            reference: reference.to_string(),
            name: Some(name.to_string()),
            kernel: KernelChoice {
                kernel_ref: Some(kernel.to_string()),
                ..KernelChoice::default()
            },
            ..ImagePullParams::default()
        };
        let image = self
            .client
            .call_streaming::<methods::image::Pull>(&params, |_| {})
            .await
            .map_err(|e| {
                let mut e = RestError::daemon(&format!("pulling template {reference}"), &e);
                // A reference that does not pull is the request's fault, and a 5xx would
                // be retried by the SDKs.
                if e.status.is_server_error() {
                    e.status = StatusCode::BAD_REQUEST;
                }
                e
            })?;
        Ok(image.name)
    }

    async fn image(&self, name: &str) -> Result<Option<String>, RestError> {
        let shown = self
            .client
            .call::<methods::image::Show>(&ImageRef {
                image: name.to_string(),
            })
            .await;
        match shown {
            Ok(shown) => Ok(Some(shown.image.name)),
            Err(ClientError::Api(e))
                if matches!(e.code, ErrorCode::NotFound | ErrorCode::BadRequest) =>
            {
                Ok(None)
            }
            Err(e) => Err(RestError::daemon("looking up the template's image", &e)),
        }
    }

    /// Kills and deletes a sandbox; `false` when there was none.
    pub async fn kill(&self, id: &str) -> Result<bool, RestError> {
        let Some(sandbox) = self.map().remove(id) else {
            return Ok(false);
        };
        sandbox.processes.end_all();
        let params = VmDeleteParams {
            vm: sandbox.id.clone(),
            force: true,
        };
        match self.client.call::<methods::vm::Delete>(&params).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(true),
            Err(e) => Err(RestError::daemon(&format!("deleting sandbox {id}"), &e)),
        }
    }

    /// E2B's `SandboxMetric` now, from `vm.stats`: the guest's memory and CPU use (the
    /// CPU since the last look, or since boot at the first), the disks as the host sees
    /// them (allocated of apparent).
    pub async fn metric(&self, sandbox: &Sandbox) -> Result<serde_json::Value, RestError> {
        let stats = self
            .client
            .call::<methods::vm::Stats>(&VmRef {
                vm: sandbox.id.clone(),
            })
            .await
            .map_err(|e| {
                RestError::daemon(&format!("reading sandbox {}'s stats", sandbox.id), &e)
            })?;
        let guest = stats.guest.ok_or_else(|| {
            RestError::new(
                StatusCode::CONFLICT,
                format!("sandbox {} is not running: no metrics", sandbox.id),
            )
        })?;
        let busy = guest.cpu_user_secs + guest.cpu_system_secs;
        let all = busy + guest.cpu_idle_secs;
        let (was_busy, was_all) = {
            let mut last = sandbox.cpu_seen.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *last, (busy, all))
        };
        let (d_busy, d_all) = if all > was_all {
            (busy - was_busy, all - was_all)
        } else {
            (busy, all)
        };
        let cpu_used_pct = if d_all > 0.0 {
            (100.0 * d_busy / d_all).clamp(0.0, 100.0)
        } else {
            0.0
        };
        let now = SystemTime::now();
        let disks = [&stats.host.root_disk, &stats.host.work_disk];
        Ok(serde_json::json!({
            "timestamp": rfc3339(now),
            "timestampUnix": now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "cpuCount": sandbox.cpus,
            "cpuUsedPct": (cpu_used_pct * 100.0).round() / 100.0,
            "memUsed": guest.memory_used_bytes,
            "memTotal": guest.memory_total_bytes,
            "memCache": 0,
            "diskUsed": disks.iter().map(|d| d.allocated_bytes).sum::<u64>(),
            "diskTotal": disks.iter().map(|d| d.apparent_bytes).sum::<u64>(),
        }))
    }

    /// A new deadline, `secs` from now.
    pub fn set_timeout(&self, id: &str, secs: u64) -> Result<(), RestError> {
        let sandbox = self.get(id)?;
        sandbox.update(|life| life.end_at = SystemTime::now() + Duration::from_secs(secs));
        Ok(())
    }

    /// Pauses a running sandbox (its vCPUs stop, memory kept); 409 when already paused.
    pub async fn pause(&self, id: &str) -> Result<(), RestError> {
        let sandbox = self.get(id)?;
        if sandbox.paused() {
            return Err(RestError::new(
                StatusCode::CONFLICT,
                format!("sandbox {id} is already paused"),
            ));
        }
        let vm = self
            .client
            .call::<methods::vm::Pause>(&VmRef { vm: id.to_string() })
            .await
            .map_err(|e| RestError::daemon(&format!("pausing sandbox {id}"), &e))?;
        sandbox.update(|life| life.paused = vm.state == VmState::Paused);
        Ok(())
    }

    /// Resumes a paused sandbox (`true`) or leaves a running one (`false`); the deadline
    /// becomes at least `secs` from now.
    pub async fn connect(
        &self,
        id: &str,
        secs: Option<u64>,
    ) -> Result<(Arc<Sandbox>, bool), RestError> {
        let sandbox = self.get(id)?;
        let resumed = sandbox.paused();
        if resumed {
            self.client
                .call::<methods::vm::Resume>(&VmRef { vm: id.to_string() })
                .await
                .map_err(|e| RestError::daemon(&format!("resuming sandbox {id}"), &e))?;
        }
        let wanted = SystemTime::now() + Duration::from_secs(secs.unwrap_or(DEFAULT_TIMEOUT_SECS));
        sandbox.update(|life| {
            life.paused = false;
            life.end_at = life.end_at.max(wanted);
        });
        Ok((sandbox, resumed))
    }

    /// Ends sandboxes at their deadlines, for as long as the server runs.
    pub async fn reap(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REAP_EVERY);
        loop {
            tick.tick().await;
            let now = SystemTime::now();
            let due: Vec<Arc<Sandbox>> = self
                .map()
                .values()
                .filter(|s| {
                    let life = s.life();
                    !life.paused && life.end_at <= now
                })
                .cloned()
                .collect();
            for sandbox in due {
                // A sandbox that cannot pause is killed: past its deadline it must not run on.
                let paused = sandbox.auto_pause && self.pause(&sandbox.id).await.is_ok();
                let ended = if paused {
                    Ok(())
                } else {
                    self.kill(&sandbox.id).await.map(|_| ())
                };
                match ended {
                    Ok(()) => {
                        tracing::info!(sandbox = %sandbox.id, paused = sandbox.auto_pause, "timeout reached")
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %sandbox.id, error = %e, "ending a sandbox at its timeout")
                    }
                }
            }
        }
    }
}

/// 32-bit FNV-1a: a short, stable suffix that tells two references' images apart.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Seconds since the epoch as RFC 3339.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    banger_api::time::rfc3339(secs)
}

/// `bytes` random bytes from the kernel, as hex (ids and access tokens).
/// Tokens must never be guessable: without the kernel's CSPRNG there is no sandbox.
pub fn random_hex(bytes: usize) -> Result<String, RestError> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| {
            RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading /dev/urandom: {e}"),
            )
        })?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
