//! The `snapshots` table: one row per complete snapshot. A row is inserted only once
//! every file of the snapshot is written and synced, so a listed snapshot is whole; a
//! directory no row owns is a snapshot cut short, swept at the next start.

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, StoreError};

/// A row of the `snapshots` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: String,
    pub name: String,
    pub image_id: String,
    pub source_vm: String,
    pub vmm: String,
    pub spec: String,
    pub dir: String,
    pub size_bytes: u64,
    pub paused_ms: u64,
    pub created_at: String,
    /// Set on a warm start's ready-snapshot: the digest of what makes it valid.
    pub warm_key: Option<String>,
}

const COLUMNS: &str =
    "id, name, image_id, source_vm, vmm, spec, dir, size_bytes, paused_ms, created_at, warm_key";

fn from_row(row: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: row.get(0)?,
        name: row.get(1)?,
        image_id: row.get(2)?,
        source_vm: row.get(3)?,
        vmm: row.get(4)?,
        spec: row.get(5)?,
        dir: row.get(6)?,
        size_bytes: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
        paused_ms: u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
        created_at: row.get(9)?,
        warm_key: row.get(10)?,
    })
}

impl Store {
    /// Inserts a snapshot; a taken name is [`StoreError::SnapshotNameTaken`].
    pub fn insert_snapshot(&self, s: &SnapshotRow) -> Result<(), StoreError> {
        let conn = self.conn();
        let res = conn.execute(
            &format!(
                "INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                s.id,
                s.name,
                s.image_id,
                s.source_vm,
                s.vmm,
                s.spec,
                s.dir,
                i64::try_from(s.size_bytes).unwrap_or(i64::MAX),
                i64::try_from(s.paused_ms).unwrap_or(i64::MAX),
                s.created_at,
                s.warm_key,
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                // With `conn`: the store's lock is held (`find_snapshot` would wait on it forever).
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && conn
                        .query_row("SELECT 1 FROM snapshots WHERE name = ?1", [&s.name], |_| Ok(()))
                        .optional()
                        .ok()
                        .flatten()
                        .is_some() =>
            {
                Err(StoreError::SnapshotNameTaken(s.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM snapshots ORDER BY name"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Finds a snapshot by name, then by id.
    pub fn find_snapshot(&self, name_or_id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        let conn = self.conn();
        let by = |column: &str| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE {column} = ?1"),
                [name_or_id],
                from_row,
            )
            .optional()
        };
        Ok(match by("name")? {
            Some(s) => Some(s),
            None => by("id")?,
        })
    }

    /// The warm start ready-snapshot with this key.
    pub fn find_warm_snapshot(&self, key: &str) -> Result<Option<SnapshotRow>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM snapshots WHERE warm_key = ?1"),
                [key],
                from_row,
            )
            .optional()?)
    }

    /// An image's warm start ready-snapshots, newest first.
    pub fn warm_snapshots_of_image(&self, image_id: &str) -> Result<Vec<SnapshotRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE image_id = ?1 AND warm_key IS NOT NULL \
             ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map([image_id], from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Names of the user's snapshots of an image (warm ones go with the image).
    pub fn snapshot_names_of_image(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name FROM snapshots WHERE image_id = ?1 AND warm_key IS NULL ORDER BY name",
        )?;
        let rows = stmt.query_map([image_id], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", [id])?
            > 0)
    }

    /// Ids of every snapshot (the startup sweep removes directories no row owns).
    pub fn snapshot_ids(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM snapshots")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str, name: &str, warm_key: Option<&str>) -> SnapshotRow {
        SnapshotRow {
            id: id.into(),
            name: name.into(),
            image_id: "img1".into(),
            source_vm: "src".into(),
            vmm: "qemu".into(),
            spec: "{}".into(),
            dir: format!("/snapshots/{id}"),
            size_bytes: 1,
            paused_ms: 1,
            created_at: "2026-12-01T00:00:00Z".into(),
            warm_key: warm_key.map(str::to_string),
        }
    }

    /// Conflicts are answered, never waited on: the conflict check runs under the store's
    /// lock that the insert holds (a second lock of it would never be granted).
    #[test]
    fn a_taken_name_or_warm_key_is_an_error_not_a_hang() {
        let store = super::super::vms::tests::store_with_image();
        store
            .insert_snapshot(&snap("a1", "s1", Some("k")))
            .expect("first");
        match store.insert_snapshot(&snap("a2", "s1", None)) {
            Err(StoreError::SnapshotNameTaken(name)) => assert_eq!(name, "s1"),
            other => panic!("expected a taken name, got {other:?}"),
        }
        let same_key = store.insert_snapshot(&snap("a3", "s2", Some("k")));
        assert!(
            same_key.is_err() && !matches!(same_key, Err(StoreError::SnapshotNameTaken(_))),
            "{same_key:?}"
        );
        assert_eq!(store.list_snapshots().expect("list").len(), 1);
    }
}
