//! The daemon's SQLite store.
//!
//! One connection behind a mutex: every operation is a short transaction, so contention
//! is negligible next to the work (pulls, boots) the daemon does between them.

mod migrations;
mod snapshots;
mod vms;

pub use snapshots::SnapshotRow;
pub use vms::VmRow;

use banger_api::image::Image;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("an image named {0:?} already exists")]
    NameTaken(String),
    #[error("a kernel named {0:?} already exists")]
    KernelNameTaken(String),
    #[error(
        "a VM named {0:?} already exists; pick another name or delete it with `banger vm delete {0}`"
    )]
    VmNameTaken(String),
    #[error(
        "a snapshot named {0:?} already exists; pick another name or delete it with `banger snapshot delete {0}`"
    )]
    SnapshotNameTaken(String),
    #[error(
        "the database schema is version {found}, newer than this bangerd understands ({known}); upgrade banger"
    )]
    SchemaTooNew { found: i64, known: i64 },
}

/// Where a stored kernel's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    pub kernel_path: String,
    /// The kernel's own directory (`kernels/<name>/`).
    pub dir: String,
    pub initrd_path: Option<String>,
    pub modules_dir: Option<String>,
    /// Architecture read from the kernel at import (`amd64`, `arm64`), when known.
    pub arch: Option<String>,
}

/// A row of the `kernels` table: where a stored kernel's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRow {
    pub name: String,
    pub version: Option<String>,
    pub arch: Option<String>,
    pub dir: String,
    /// What QEMU boots (`vmlinuz` when present, else `vmlinux`).
    pub kernel_path: String,
    pub initrd_path: Option<String>,
    pub modules_dir: Option<String>,
    pub source: Option<String>,
    pub created_at: String,
}

const KERNEL_COLUMNS: &str =
    "name, version, arch, dir, kernel_path, initrd_path, modules_dir, source, created_at";

fn kernel_from_row(row: &Row<'_>) -> rusqlite::Result<KernelRow> {
    Ok(KernelRow {
        name: row.get(0)?,
        version: row.get(1)?,
        arch: row.get(2)?,
        dir: row.get(3)?,
        kernel_path: row.get(4)?,
        initrd_path: row.get(5)?,
        modules_dir: row.get(6)?,
        source: row.get(7)?,
        created_at: row.get(8)?,
    })
}

pub struct Store {
    conn: Mutex<Connection>,
}

const IMAGE_COLUMNS: &str = "id, name, managed, artifact_dir, rootfs_path, kernel_path, \
    initrd_path, modules_dir, kernel_ref, source_ref, manifest_digest, platform, size_bytes, \
    allocated_bytes, created_at";

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        // WAL keeps readers off writers' backs; FULL sync because a lost commit after a
        // publish rename would orphan a whole image directory.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned mutex is safe to reuse.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts a new image; a taken name is [`StoreError::NameTaken`].
    pub fn insert_image(&self, image: &Image) -> Result<(), StoreError> {
        let conn = self.conn();
        let res = conn.execute(
            &format!(
                "INSERT INTO images ({IMAGE_COLUMNS}, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)"
            ),
            params![
                image.id,
                image.name,
                image.managed,
                image.artifact_dir,
                image.rootfs_path,
                image.kernel_path,
                image.initrd_path,
                image.modules_dir,
                image.kernel_ref,
                image.source_ref,
                image.manifest_digest,
                image.platform,
                image.size_bytes.map(|v| v as i64),
                image.allocated_bytes.map(|v| v as i64),
                image.created_at,
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && self_name_taken(&conn, &image.name) =>
            {
                Err(StoreError::NameTaken(image.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("SELECT {IMAGE_COLUMNS} FROM images ORDER BY name"))?;
        let rows = stmt.query_map([], image_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Finds an image by name, then by id.
    pub fn find_image(&self, name_or_id: &str) -> Result<Option<Image>, StoreError> {
        let conn = self.conn();
        let by = |column: &str| {
            conn.query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE {column} = ?1"),
                [name_or_id],
                image_from_row,
            )
            .optional()
        };
        Ok(match by("name")? {
            Some(image) => Some(image),
            None => by("id")?,
        })
    }

    pub fn name_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self_name_taken(&self.conn(), name))
    }

    /// Images converted from `digest` for `platform`, oldest first (rootfs reuse).
    pub fn images_with_digest(
        &self,
        digest: &str,
        platform: &str,
    ) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE manifest_digest = ?1 AND platform = ?2 ORDER BY created_at"
        ))?;
        let rows = stmt.query_map([digest, platform], image_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes an image record; false when it did not exist.
    pub fn delete_image(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM images WHERE id = ?1", [id])?
            > 0)
    }

    /// Ids of images that own a directory under the images dir (startup sweeps the rest).
    pub fn ids_owning_artifact_dirs(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM images WHERE artifact_dir IS NOT NULL")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The kernel triple stored under `name`, if any.
    pub fn find_kernel(&self, name: &str) -> Result<Option<KernelFiles>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT kernel_path, initrd_path, modules_dir, dir, arch FROM kernels WHERE name = ?1",
                [name],
                |r| {
                    Ok(KernelFiles {
                        kernel_path: r.get(0)?,
                        dir: r.get(3)?,
                        arch: r.get(4)?,
                        initrd_path: r.get(1)?,
                        modules_dir: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records a published kernel; a taken name is [`StoreError::KernelNameTaken`].
    pub fn insert_kernel(&self, k: &KernelRow) -> Result<(), StoreError> {
        let res = self.conn().execute(
            &format!(
                "INSERT INTO kernels ({KERNEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                k.name,
                k.version,
                k.arch,
                k.dir,
                k.kernel_path,
                k.initrd_path,
                k.modules_dir,
                k.source,
                k.created_at
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::KernelNameTaken(k.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn list_kernels(&self) -> Result<Vec<KernelRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {KERNEL_COLUMNS} FROM kernels ORDER BY name"
        ))?;
        let rows = stmt.query_map([], kernel_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn get_kernel(&self, name: &str) -> Result<Option<KernelRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {KERNEL_COLUMNS} FROM kernels WHERE name = ?1"),
                [name],
                kernel_from_row,
            )
            .optional()?)
    }

    /// Deletes a kernel record; false when it did not exist.
    pub fn delete_kernel(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM kernels WHERE name = ?1", [name])?
            > 0)
    }

    /// Images created with `--kernel-ref name`.
    pub fn images_with_kernel_ref(&self, name: &str) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE kernel_ref = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([name], image_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

fn self_name_taken(conn: &Connection, name: &str) -> bool {
    conn.query_row("SELECT 1 FROM images WHERE name = ?1", [name], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
        .unwrap_or(false)
}

fn image_from_row(row: &Row<'_>) -> rusqlite::Result<Image> {
    Ok(Image {
        id: row.get(0)?,
        name: row.get(1)?,
        managed: row.get(2)?,
        artifact_dir: row.get(3)?,
        rootfs_path: row.get(4)?,
        kernel_path: row.get(5)?,
        initrd_path: row.get(6)?,
        modules_dir: row.get(7)?,
        kernel_ref: row.get(8)?,
        source_ref: row.get(9)?,
        manifest_digest: row.get(10)?,
        platform: row.get(11)?,
        size_bytes: row.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        allocated_bytes: row.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        created_at: row.get(14)?,
    })
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = migrations::MIGRATIONS.len() as i64;
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (index, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(current as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, name: &str) -> Image {
        Image {
            id: id.into(),
            name: name.into(),
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
            size_bytes: Some(42),
            allocated_bytes: None,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn migrations_apply_once_and_reopen_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let store = Store::open(&path).expect("open");
        assert_eq!(
            store.schema_version().expect("version"),
            migrations::MIGRATIONS.len() as i64
        );
        store.insert_image(&image("i1", "one")).expect("insert");
        drop(store);
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.list_images().expect("list").len(), 1);
    }

    #[test]
    fn duplicate_name_is_reported_as_such() {
        let store = Store::open_in_memory().expect("open");
        store.insert_image(&image("i1", "one")).expect("insert");
        match store.insert_image(&image("i2", "one")) {
            Err(StoreError::NameTaken(n)) => assert_eq!(n, "one"),
            other => panic!("expected NameTaken, got {other:?}"),
        }
    }

    #[test]
    fn find_by_name_then_id_and_delete() {
        let store = Store::open_in_memory().expect("open");
        store.insert_image(&image("abc", "one")).expect("insert");
        assert_eq!(store.find_image("one").expect("q").expect("some").id, "abc");
        assert_eq!(
            store.find_image("abc").expect("q").expect("some").name,
            "one"
        );
        assert!(store.find_image("zzz").expect("q").is_none());
        assert!(store.delete_image("abc").expect("delete"));
        assert!(!store.delete_image("abc").expect("delete again"));
    }

    #[test]
    fn managed_image_requires_artifact_dir() {
        let store = Store::open_in_memory().expect("open");
        let mut bad = image("m1", "managed");
        bad.managed = true;
        assert!(matches!(
            store.insert_image(&bad),
            Err(StoreError::Sqlite(_))
        ));
    }

    #[test]
    fn kernels_insert_list_find_delete() {
        let store = Store::open_in_memory().expect("open");
        let row = KernelRow {
            name: "k".into(),
            version: Some("6.1.0".into()),
            arch: Some("amd64".into()),
            dir: "/s/kernels/k".into(),
            kernel_path: "/s/kernels/k/vmlinuz".into(),
            initrd_path: None,
            modules_dir: Some("/s/kernels/k/modules".into()),
            source: Some("files:/x".into()),
            created_at: "t".into(),
        };
        store.insert_kernel(&row).expect("insert");
        assert!(matches!(
            store.insert_kernel(&row),
            Err(StoreError::KernelNameTaken(_))
        ));
        assert_eq!(store.list_kernels().expect("list"), vec![row.clone()]);
        assert_eq!(
            store
                .find_kernel("k")
                .expect("find")
                .expect("some")
                .kernel_path,
            row.kernel_path
        );
        let mut img = image("i1", "uses-k");
        img.kernel_ref = Some("k".into());
        store.insert_image(&img).expect("image");
        assert_eq!(store.images_with_kernel_ref("k").expect("refs").len(), 1);
        assert!(store.delete_kernel("k").expect("delete"));
        assert!(store.get_kernel("k").expect("get").is_none());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("set");
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }
}
