//! The `vms` table: one row per VM, its spec and runtime as JSON documents.
//!
//! The row is the source of truth for a VM's state; the daemon's in-memory view of live
//! VMs is rebuilt from it at start (re-adoption).

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// A row of the `vms` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub state: String,
    pub spec: String,
    pub runtime: Option<String>,
    pub last_error: Option<String>,
    pub dir: String,
    pub created_at: String,
    pub started_at: Option<String>,
}

const VM_COLUMNS: &str =
    "id, name, image_id, state, spec, runtime, last_error, dir, created_at, started_at";

fn vm_from_row(row: &Row<'_>) -> rusqlite::Result<VmRow> {
    Ok(VmRow {
        id: row.get(0)?,
        name: row.get(1)?,
        image_id: row.get(2)?,
        state: row.get(3)?,
        spec: row.get(4)?,
        runtime: row.get(5)?,
        last_error: row.get(6)?,
        dir: row.get(7)?,
        created_at: row.get(8)?,
        started_at: row.get(9)?,
    })
}

impl Store {
    /// Inserts a new VM; a taken name is [`StoreError::VmNameTaken`].
    pub fn insert_vm(&self, vm: &VmRow) -> Result<(), StoreError> {
        let conn = self.conn();
        let res = conn.execute(
            &format!(
                "INSERT INTO vms ({VM_COLUMNS}, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9)"
            ),
            params![
                vm.id,
                vm.name,
                vm.image_id,
                vm.state,
                vm.spec,
                vm.runtime,
                vm.last_error,
                vm.dir,
                vm.created_at,
                vm.started_at,
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && conn
                        .query_row("SELECT 1 FROM vms WHERE name = ?1", [&vm.name], |_| Ok(()))
                        .optional()
                        .ok()
                        .flatten()
                        .is_some() =>
            {
                Err(StoreError::VmNameTaken(vm.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn list_vms(&self) -> Result<Vec<VmRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {VM_COLUMNS} FROM vms ORDER BY name"))?;
        let rows = stmt.query_map([], vm_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Finds a VM by name, then by id.
    pub fn find_vm(&self, name_or_id: &str) -> Result<Option<VmRow>, StoreError> {
        let conn = self.conn();
        let by = |column: &str| {
            conn.query_row(
                &format!("SELECT {VM_COLUMNS} FROM vms WHERE {column} = ?1"),
                [name_or_id],
                vm_from_row,
            )
            .optional()
        };
        Ok(match by("name")? {
            Some(vm) => Some(vm),
            None => by("id")?,
        })
    }

    /// Names of the VMs created from an image.
    pub fn vm_names_of_image(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM vms WHERE image_id = ?1 ORDER BY name")?;
        let rows = stmt.query_map([image_id], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records a state change with its runtime document and error (all three at once, so
    /// a reader never sees a state with another state's runtime).
    pub fn update_vm_state(
        &self,
        id: &str,
        state: &str,
        runtime: Option<&str>,
        last_error: Option<&str>,
        started_at: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET state = ?2, runtime = ?3, last_error = ?4, \
             started_at = COALESCE(?5, started_at), updated_at = ?6 WHERE id = ?1",
            params![
                id,
                state,
                runtime,
                last_error,
                started_at,
                crate::ids::now_rfc3339()
            ],
        )?;
        Ok(())
    }

    /// Updates the spec (e.g. the init mode resolved at first boot).
    pub fn update_vm_spec(&self, id: &str, spec: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vms SET spec = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, spec, crate::ids::now_rfc3339()],
        )?;
        Ok(())
    }

    pub fn delete_vm(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute("DELETE FROM vms WHERE id = ?1", [id])? > 0)
    }

    /// Ids of every VM (the startup sweep removes VM dirs no row owns).
    pub fn vm_ids(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM vms")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use banger_api::image::Image;

    fn row(id: &str, name: &str) -> VmRow {
        VmRow {
            id: id.into(),
            name: name.into(),
            image_id: "img1".into(),
            state: "created".into(),
            spec: "{}".into(),
            runtime: None,
            last_error: None,
            dir: format!("/vms/{id}"),
            created_at: "2026-12-01T00:00:00Z".into(),
            started_at: None,
        }
    }

    /// An in-memory store with one image, `img1`.
    pub(crate) fn store_with_image() -> Store {
        let store = Store::open_in_memory().expect("store");
        store
            .insert_image(&Image {
                id: "img1".into(),
                name: "base".into(),
                managed: false,
                artifact_dir: None,
                rootfs_path: "/r".into(),
                kernel_path: "/k".into(),
                initrd_path: None,
                modules_dir: None,
                kernel_ref: None,
                source_ref: None,
                manifest_digest: None,
                platform: None,
                size_bytes: None,
                allocated_bytes: None,
                created_at: "2026-12-01T00:00:00Z".into(),
            })
            .expect("image");
        store
    }

    #[test]
    fn names_are_unique_and_state_updates_are_atomic() {
        let store = store_with_image();
        store.insert_vm(&row("a", "dev")).expect("insert");
        assert!(matches!(
            store.insert_vm(&row("b", "dev")),
            Err(StoreError::VmNameTaken(n)) if n == "dev"
        ));
        store
            .update_vm_state("a", "running", Some("{\"x\":1}"), None, Some("t1"))
            .expect("update");
        let vm = store.find_vm("dev").expect("find").expect("some");
        assert_eq!(vm.state, "running");
        assert_eq!(vm.runtime.as_deref(), Some("{\"x\":1}"));
        assert_eq!(vm.started_at.as_deref(), Some("t1"));
        assert_eq!(
            store.find_vm("a").expect("by id").map(|v| v.name),
            Some("dev".into())
        );
        assert_eq!(store.vm_names_of_image("img1").expect("names"), vec!["dev"]);
        assert!(store.delete_vm("a").expect("delete"));
        assert!(store.find_vm("dev").expect("find").is_none());
    }

    #[test]
    fn a_vm_needs_its_image() {
        let store = Store::open_in_memory().expect("store");
        assert!(store.insert_vm(&row("a", "dev")).is_err());
    }
}
