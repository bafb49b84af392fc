//! A `vm.hold` lease: VMs created under it (`vm.create`'s `lease`) are killed and deleted by
//! the daemon when the lease ends, which is when its holder drops it or its process ends,
//! however it ends. `vm run --rm` and `banger serve` hold one.

use banger_api::event::OpEvent;
use banger_api::methods;
use banger_api::system::Empty;

use crate::transport::{Client, ClientError};

/// A lease, held on its own connection by a task until dropped.
pub struct Lease {
    id: String,
    holder: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Opens a lease; it lasts until this value is dropped.
    pub async fn open(client: &Client) -> anyhow::Result<Lease> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<String, ClientError>>();
        let holder_client = client.clone();
        let holder = tokio::spawn(async move {
            let mut tx = Some(tx);
            let ended = holder_client
                .call_streaming::<methods::vm::Hold>(&Empty {}, |event| {
                    if let OpEvent::Lease { id } = event
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(Ok(id.clone()));
                    }
                })
                .await;
            if let (Some(tx), Err(e)) = (tx, ended) {
                let _ = tx.send(Err(e));
            }
        });
        let id = match rx.await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                return Err(anyhow::Error::new(e).context("opening a vm.hold lease"));
            }
            Err(_) => {
                anyhow::bail!("bangerd ended the vm.hold call without a lease (an older daemon?)")
            }
        };
        Ok(Lease { id, holder })
    }

    /// The id `vm.create`'s `lease` takes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the daemon still holds the lease (its call has not ended).
    pub fn is_held(&self) -> bool {
        !self.holder.is_finished()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.holder.abort();
    }
}
