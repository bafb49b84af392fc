//! The one policy for "which kernel does this image get", shared by register and pull:
//! `--kernel-ref NAME` from the kernel store XOR direct `--kernel/--initrd/--modules`
//! paths. Only the kernel triple is validated here; the rootfs is the caller's business.

use std::path::{Path, PathBuf};

use banger_api::image::KernelChoice;

use super::manifest::VMLINUX;
use crate::error::OpError;
use crate::paths::{self, Expect};
use crate::store::Store;

/// A validated kernel triple, absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInputs {
    pub kernel_ref: Option<String>,
    pub kernel: PathBuf,
    /// The uncompressed kernel beside a stored compressed one (what Firecracker boots);
    /// only kernels from the store have one, direct `--kernel` paths are taken as given.
    pub vmlinux: Option<PathBuf>,
    /// The kernel's architecture, known for kernels from the store.
    pub arch: Option<String>,
    pub initrd: Option<PathBuf>,
    pub modules: Option<PathBuf>,
}

impl KernelInputs {
    /// Refuses a kernel built for another architecture than the image's platform
    /// (`os/arch[/variant]`): such an image would not boot. A stored kernel's arch is
    /// known; a direct `--kernel` file is read for it, and one we cannot identify passes.
    pub fn check_platform(&self, platform: &str) -> Result<(), OpError> {
        let image_arch = platform.split('/').nth(1).unwrap_or_default();
        let arch = match (&self.arch, &self.kernel_ref) {
            (Some(arch), _) => Some(arch.clone()),
            (None, None) => super::staging::arch_of(&self.kernel),
            (None, Some(_)) => None,
        };
        match arch {
            Some(arch) if !image_arch.is_empty() && arch != image_arch => {
                let which = match &self.kernel_ref {
                    Some(name) => format!("kernel {name:?}"),
                    None => format!("the kernel {}", self.kernel.display()),
                };
                Err(OpError::BadRequest(format!(
                    "{which} is for {arch} but the image is {platform}; use a kernel for {image_arch} or pull the image with --platform linux/{arch}"
                )))
            }
            _ => Ok(()),
        }
    }
}

pub fn resolve(store: &Store, args: &KernelChoice) -> Result<KernelInputs, OpError> {
    let non_empty = |o: &Option<String>| o.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let kernel_ref = non_empty(&args.kernel_ref);
    let kernel_path = non_empty(&args.kernel_path);
    let initrd_path = non_empty(&args.initrd_path);
    let modules_dir = non_empty(&args.modules_dir);

    match (kernel_ref, kernel_path) {
        (Some(_), Some(_)) => Err(OpError::BadRequest(
            "--kernel-ref and --kernel are mutually exclusive; pass one".into(),
        )),
        (Some(name), None) => {
            if initrd_path.is_some() || modules_dir.is_some() {
                return Err(OpError::BadRequest(
                    "--initrd and --modules go with --kernel, not with --kernel-ref (the kernel store provides them)".into(),
                ));
            }
            let files = store.find_kernel(&name)?.ok_or_else(|| {
                OpError::NotFound(format!(
                    "kernel {name:?} not found; list kernels with `banger kernel list` or import one with `banger kernel import`"
                ))
            })?;
            Ok(KernelInputs {
                kernel: paths::validate("kernel", &files.kernel_path, Expect::File)?,
                vmlinux: Some(Path::new(&files.dir).join(VMLINUX))
                    .filter(|p| p.is_file() && *p != Path::new(&files.kernel_path)),
                initrd: files
                    .initrd_path
                    .map(|p| paths::validate("initrd", &p, Expect::File))
                    .transpose()?,
                modules: files
                    .modules_dir
                    .map(|p| paths::validate("modules", &p, Expect::Dir))
                    .transpose()?,
                kernel_ref: Some(name),
                arch: files.arch,
            })
        }
        (None, Some(kernel)) => Ok(KernelInputs {
            kernel: paths::validate("kernel", &kernel, Expect::File)?,
            vmlinux: None,
            arch: None,
            initrd: initrd_path
                .map(|p| paths::validate("initrd", &p, Expect::File))
                .transpose()?,
            modules: modules_dir
                .map(|p| paths::validate("modules", &p, Expect::Dir))
                .transpose()?,
            kernel_ref: None,
        }),
        (None, None) => Err(OpError::BadRequest(
            "a kernel is required: pass --kernel PATH (with optional --initrd/--modules) or --kernel-ref NAME".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::open_in_memory().expect("store")
    }

    #[test]
    fn a_kernel_must_match_the_image_architecture() {
        let stored = KernelInputs {
            kernel_ref: Some("cloud".into()),
            kernel: PathBuf::from("/k/vmlinuz"),
            vmlinux: None,
            arch: Some("arm64".into()),
            initrd: None,
            modules: None,
        };
        assert!(stored.check_platform("linux/arm64/v8").is_ok());
        let err = stored.check_platform("linux/amd64").expect_err("mismatch");
        assert!(err.to_string().contains("--platform linux/arm64"), "{err}");
        // Unknown on either side: nothing to compare.
        let unknown = KernelInputs {
            arch: None,
            ..stored.clone()
        };
        assert!(unknown.check_platform("linux/amd64").is_ok());
        // A direct file is read for its arch; one that is no kernel we know passes.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("Image.gz");
        let image = banger_testkit::fake_kernel::arm64_image("6.1.0");
        std::fs::write(&file, banger_testkit::fake_kernel::gzip(&image)).expect("write");
        let direct = KernelInputs {
            kernel_ref: None,
            arch: None,
            kernel: file,
            ..stored
        };
        let err = direct
            .check_platform("linux/amd64")
            .expect_err("arm64 file");
        assert!(err.to_string().contains("Image.gz is for arm64"), "{err}");
        let unknown_file = KernelInputs {
            kernel: dir.path().join("missing"),
            ..direct
        };
        assert!(unknown_file.check_platform("linux/amd64").is_ok());
    }

    #[test]
    fn no_kernel_information_mentions_kernel() {
        let err = resolve(&store(), &KernelChoice::default()).expect_err("must fail");
        assert!(err.to_string().contains("kernel"), "{err}");
        assert_eq!(err.code(), banger_api::ErrorCode::BadRequest);
    }

    #[test]
    fn ref_and_path_are_exclusive() {
        let args = KernelChoice {
            kernel_ref: Some("k".into()),
            kernel_path: Some("/k".into()),
            ..Default::default()
        };
        let err = resolve(&store(), &args).expect_err("must fail");
        assert!(err.to_string().contains("mutually exclusive"), "{err}");
    }

    #[test]
    fn unknown_ref_is_not_found() {
        let args = KernelChoice {
            kernel_ref: Some("nope".into()),
            ..Default::default()
        };
        let err = resolve(&store(), &args).expect_err("must fail");
        assert_eq!(err.code(), banger_api::ErrorCode::NotFound);
    }

    #[test]
    fn direct_paths_are_validated_and_made_canonical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"k").expect("write");
        let args = KernelChoice {
            kernel_path: Some(kernel.to_str().expect("utf8").into()),
            initrd_path: Some(dir.path().join("missing").to_str().expect("utf8").into()),
            ..Default::default()
        };
        let err = resolve(&store(), &args).expect_err("missing initrd");
        assert!(err.to_string().contains("initrd"), "{err}");
        let args = KernelChoice {
            initrd_path: None,
            ..args
        };
        let inputs = resolve(&store(), &args).expect("valid");
        assert_eq!(
            inputs.kernel,
            std::fs::canonicalize(&kernel).expect("canon")
        );
    }
}
