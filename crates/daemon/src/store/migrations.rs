//! Versioned schema migrations, applied in order inside one transaction each.
//!
//! `PRAGMA user_version` records how many have been applied. Never edit a shipped
//! migration: append a new one.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: images, kernels and vms, ready for managed and unmanaged images.
    r#"
    CREATE TABLE kernels (
        name            TEXT PRIMARY KEY,
        version         TEXT,
        arch            TEXT,
        dir             TEXT NOT NULL,
        kernel_path     TEXT NOT NULL,
        initrd_path     TEXT,
        modules_dir     TEXT,
        source          TEXT,
        created_at      TEXT NOT NULL
    ) STRICT;

    CREATE TABLE images (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        managed         INTEGER NOT NULL CHECK (managed IN (0, 1)),
        artifact_dir    TEXT,
        rootfs_path     TEXT NOT NULL,
        kernel_path     TEXT NOT NULL,
        initrd_path     TEXT,
        modules_dir     TEXT,
        kernel_ref      TEXT,
        source_ref      TEXT,
        manifest_digest TEXT,
        platform        TEXT,
        size_bytes      INTEGER,
        allocated_bytes INTEGER,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        CHECK (managed = 0 OR artifact_dir IS NOT NULL)
    ) STRICT;
    CREATE INDEX images_manifest_digest ON images (manifest_digest);

    CREATE TABLE vms (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        image_id        TEXT NOT NULL REFERENCES images (id),
        state           TEXT NOT NULL,
        config          TEXT NOT NULL DEFAULT '{}',
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL
    ) STRICT;
    "#,
    // 2: the VM lifecycle. The v1 `vms` table was a placeholder nothing wrote to.
    r#"
    DROP TABLE vms;
    CREATE TABLE vms (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        image_id        TEXT NOT NULL REFERENCES images (id),
        state           TEXT NOT NULL,
        -- JSON of `vms::spec::VmSpec`: what the user asked for, fixed at create.
        spec            TEXT NOT NULL,
        -- JSON of `vms::spec::VmRuntime`: processes (pid + start time), stages, VMM, or NULL.
        runtime         TEXT,
        last_error      TEXT,
        dir             TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        started_at      TEXT,
        updated_at      TEXT NOT NULL
    ) STRICT;
    CREATE INDEX vms_image_id ON vms (image_id);
    "#,
    // 3: snapshots of VMs (memory, devices, disks), the parents of forks.
    r#"
    CREATE TABLE snapshots (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        image_id        TEXT NOT NULL REFERENCES images (id),
        source_vm       TEXT NOT NULL,
        vmm             TEXT NOT NULL,
        -- JSON of the source's `vms::spec::VmSpec`: what a fork starts from.
        spec            TEXT NOT NULL,
        dir             TEXT NOT NULL,
        size_bytes      INTEGER NOT NULL,
        paused_ms       INTEGER NOT NULL,
        created_at      TEXT NOT NULL
    ) STRICT;
    CREATE INDEX snapshots_image_id ON snapshots (image_id);
    "#,
    // 4: warm starts: a ready-snapshot banger made of an image, found by the digest of
    // everything that makes it valid (NULL: a user's snapshot).
    r#"
    ALTER TABLE snapshots ADD COLUMN warm_key TEXT;
    CREATE UNIQUE INDEX snapshots_warm_key ON snapshots (warm_key);
    "#,
];
