//! envd's directory watching (`CreateWatcher`, `GetWatcherEvents`, `RemoveWatcher`, and the
//! `WatchDir` stream), by comparing listings: the guest's agent has no inotify channel to
//! the host, so each look is a `find` of the directory (depth 1, or the whole tree when
//! recursive), and the difference from the last look becomes envd's events: a new path is
//! CREATE, a vanished one REMOVE, a changed size or modification time WRITE, a changed mode
//! CHMOD. A rename is a REMOVE and a CREATE; changes undone between two looks are not seen.
//! The stream looks every [`STREAM_EVERY`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_client::Client;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::connect::{self, Code, RpcError};
use crate::filesystem;
use crate::guest::User;

/// How often a `WatchDir` stream looks at its directory.
const STREAM_EVERY: Duration = Duration::from_millis(300);
/// Watchers one sandbox may hold (each keeps a listing in memory).
const MAX_WATCHERS: usize = 64;
/// The depth of a recursive watch's listing.
const RECURSIVE_DEPTH: u64 = 64;

/// What a look records of one path: type, size, mode, modification time.
type Stamp = (String, String, u64, String);
type Listing = BTreeMap<String, Stamp>;

#[derive(Debug, Deserialize)]
pub struct WatchRequest {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Deserialize)]
pub struct WatcherRef {
    #[serde(default, rename = "watcherId", alias = "watcher_id")]
    pub watcher_id: String,
}

struct Watcher {
    path: String,
    depth: u64,
    user: User,
    last: Listing,
}

/// The watchers of one sandbox.
#[derive(Default)]
pub struct Watchers {
    next: std::sync::atomic::AtomicU64,
    all: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Watcher>>>>,
}

impl Watchers {
    fn all(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Watcher>>>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `CreateWatcher`: a first look, kept to compare the next with.
    pub async fn create(
        &self,
        client: &Client,
        vm: &str,
        user: &User,
        req: &WatchRequest,
    ) -> Result<serde_json::Value, RpcError> {
        if self.all().len() >= MAX_WATCHERS {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                format!("this sandbox already has {MAX_WATCHERS} watchers: remove some"),
            ));
        }
        let depth = if req.recursive { RECURSIVE_DEPTH } else { 1 };
        let last = look(client, vm, user, &req.path, depth).await?;
        let id = format!(
            "w{}",
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
        );
        let watcher = Watcher {
            path: req.path.clone(),
            depth,
            user: user.clone(),
            last,
        };
        self.all()
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(watcher)));
        Ok(json!({ "watcherId": id }))
    }

    /// `GetWatcherEvents`: what changed since the last look.
    pub async fn events(
        &self,
        client: &Client,
        vm: &str,
        req: &WatcherRef,
    ) -> Result<serde_json::Value, RpcError> {
        let watcher = self
            .all()
            .get(&req.watcher_id)
            .cloned()
            .ok_or_else(|| RpcError::new(Code::NotFound, "no such watcher"))?;
        let mut watcher = watcher.lock().await;
        let now = look(client, vm, &watcher.user, &watcher.path, watcher.depth).await?;
        let events = diff(&watcher.last, &now);
        watcher.last = now;
        Ok(json!({ "events": events }))
    }

    /// `RemoveWatcher`.
    pub fn remove(&self, req: &WatcherRef) -> Result<serde_json::Value, RpcError> {
        self.all()
            .remove(&req.watcher_id)
            .map(|_| json!({}))
            .ok_or_else(|| RpcError::new(Code::NotFound, "no such watcher"))
    }
}

/// `WatchDir`: checks the directory (an error before the stream starts), then streams its
/// events into `out` until the client goes or the deadline passes.
pub async fn stream(
    client: Client,
    vm: String,
    user: User,
    req: WatchRequest,
    out: mpsc::Sender<Result<Bytes, std::io::Error>>,
    deadline: Option<Duration>,
    keepalive: Duration,
) {
    let depth = if req.recursive { RECURSIVE_DEPTH } else { 1 };
    let mut last = match look(&client, &vm, &user, &req.path, depth).await {
        Ok(listing) => listing,
        Err(e) => {
            let _ = out.send(Ok(connect::end_of_stream(Some(&e)))).await;
            return;
        }
    };
    if out
        .send(Ok(connect::envelope(&json!({"start": {}}))))
        .await
        .is_err()
    {
        return;
    }
    let until = deadline.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(STREAM_EVERY);
    tick.tick().await;
    let mut quiet_since = tokio::time::Instant::now();
    let ended = loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = async { match until { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                break Some(RpcError::new(Code::DeadlineExceeded, "the watch's timeout passed"));
            }
            () = out.closed() => return,
        }
        let now = match look(&client, &vm, &user, &req.path, depth).await {
            Ok(listing) => listing,
            Err(e) => break Some(e),
        };
        let events = diff(&last, &now);
        last = now;
        let mut frames: Vec<Bytes> = events
            .iter()
            .map(|e| connect::envelope(&json!({ "filesystem": e })))
            .collect();
        if frames.is_empty() && quiet_since.elapsed() >= keepalive {
            frames.push(connect::envelope(&json!({"keepalive": {}})));
        }
        if !frames.is_empty() {
            quiet_since = tokio::time::Instant::now();
        }
        for frame in frames {
            if out.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    };
    let _ = out.send(Ok(connect::end_of_stream(ended.as_ref()))).await;
}

/// One look: every path under `path` to `depth`, relative to it.
async fn look(
    client: &Client,
    vm: &str,
    user: &User,
    path: &str,
    depth: u64,
) -> Result<Listing, RpcError> {
    let entries = filesystem::listing(client, vm, user, path, depth).await?;
    let mut listing = Listing::new();
    for (e, relative) in entries {
        let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        listing.insert(
            relative,
            (
                text("type"),
                text("size"),
                e["mode"].as_u64().unwrap_or(0),
                text("modifiedTime"),
            ),
        );
    }
    Ok(listing)
}

/// envd's events from two looks.
fn diff(before: &Listing, after: &Listing) -> Vec<serde_json::Value> {
    let event = |name: &str, kind: &str| json!({ "name": name, "type": kind });
    let mut events = Vec::new();
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        events.push(event(name, "EVENT_TYPE_REMOVE"));
    }
    for (name, now) in after {
        match before.get(name) {
            None => events.push(event(name, "EVENT_TYPE_CREATE")),
            Some(was) if was.0 != now.0 => {
                events.push(event(name, "EVENT_TYPE_REMOVE"));
                events.push(event(name, "EVENT_TYPE_CREATE"));
            }
            Some(was) => {
                if was.1 != now.1 || was.3 != now.3 {
                    events.push(event(name, "EVENT_TYPE_WRITE"));
                }
                if was.2 != now.2 {
                    events.push(event(name, "EVENT_TYPE_CHMOD"));
                }
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(kind: &str, size: &str, mode: u64, mtime: &str) -> Stamp {
        (kind.into(), size.into(), mode, mtime.into())
    }

    #[test]
    fn two_looks_become_envds_events() {
        let before: Listing = [
            (
                "gone".to_string(),
                stamp("FILE_TYPE_FILE", "1", 0o644, "t1"),
            ),
            (
                "same".to_string(),
                stamp("FILE_TYPE_FILE", "1", 0o644, "t1"),
            ),
            (
                "grown".to_string(),
                stamp("FILE_TYPE_FILE", "1", 0o644, "t1"),
            ),
            (
                "chmod".to_string(),
                stamp("FILE_TYPE_FILE", "1", 0o644, "t1"),
            ),
        ]
        .into();
        let after: Listing = [
            (
                "same".to_string(),
                stamp("FILE_TYPE_FILE", "1", 0o644, "t1"),
            ),
            (
                "grown".to_string(),
                stamp("FILE_TYPE_FILE", "9", 0o644, "t2"),
            ),
            (
                "chmod".to_string(),
                stamp("FILE_TYPE_FILE", "1", 0o600, "t1"),
            ),
            (
                "sub/new".to_string(),
                stamp("FILE_TYPE_FILE", "0", 0o644, "t2"),
            ),
        ]
        .into();
        let events = diff(&before, &after);
        let pairs: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["type"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("gone".into(), "EVENT_TYPE_REMOVE".into()),
                ("chmod".into(), "EVENT_TYPE_CHMOD".into()),
                ("grown".into(), "EVENT_TYPE_WRITE".into()),
                ("sub/new".into(), "EVENT_TYPE_CREATE".into()),
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }
}
