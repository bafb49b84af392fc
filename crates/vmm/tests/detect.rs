//! Detection on the machine the tests run on, with the real KVM probe.

// Test code: a failed step panics on purpose, failing the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use banger_vmm::{Accel, DetectOptions, KvmStatus, detect, driver};

/// Whether the CPU has hardware virtualization (VMX/SVM); without it, a `/dev/kvm` that
/// opens is PVM-backed and must fail the probe.
fn hardware_virtualization() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

fn kvm_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[test]
fn detection_probes_once_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kvm-probe.json");
    let opts = DetectOptions {
        cache: Some(cache.clone()),
        ..DetectOptions::default()
    };
    let started = Instant::now();
    let first = detect(&opts);
    let probing = started.elapsed();
    eprintln!("first detection ({probing:?}): {first:#?}");
    assert!(first.qemu.is_some(), "{}", first.reason);
    assert_eq!(
        first.qemu_version.as_deref().map(|v| v.starts_with('7')),
        Some(true)
    );

    if kvm_opens() && !hardware_virtualization() {
        // This project's machines: /dev/kvm exists, guests cannot run on it.
        assert!(
            matches!(first.kvm, KvmStatus::ProbeFailed { .. }),
            "{:?}",
            first.kvm
        );
        assert!(matches!(first.accel, Accel::Tcg { tsc_khz: Some(_) }));
        assert!(first.reason.contains("probe guest"), "{}", first.reason);
        assert!(first.reason.ends_with("using software emulation (TCG)"));
    } else if kvm_opens() {
        assert!(
            matches!(first.kvm, KvmStatus::Works { .. }),
            "{:?}",
            first.kvm
        );
        assert_eq!(first.accel, Accel::Kvm);
    } else {
        assert!(matches!(first.accel, Accel::Tcg { .. }));
    }
    assert!(cache.exists(), "the cache is written");

    let started = Instant::now();
    let second = detect(&opts);
    let cached = started.elapsed();
    eprintln!("cached detection: {cached:?}");
    assert_eq!(second, first);
    assert!(cached < std::time::Duration::from_secs(1), "{cached:?}");

    // The second answer really came from the file: an edited entry is believed.
    if let KvmStatus::ProbeFailed { .. } = first.kvm {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
        v["facts"]["kvm"]["detail"] = "edited".into();
        std::fs::write(&cache, v.to_string()).unwrap();
        let third = detect(&opts);
        assert!(third.reason.contains("(edited)"), "{}", third.reason);
    }

    let vmm = driver(&first).unwrap();
    assert_eq!(vmm.name(), "qemu");
}

/// Firecracker is found where it is given, with its version; here the probe fails, so it
/// is not usable: `auto` picks QEMU and says why, `firecracker` is refused saying KVM
/// cannot boot guests on this host.
#[test]
fn firecracker_is_detected_but_not_usable_without_a_working_kvm() {
    let fc =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools/firecracker");
    if !fc.is_file() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {} is missing",
            fc.display()
        );
        eprintln!("SKIPPED: no Firecracker at {}", fc.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = detect(&DetectOptions {
        cache: Some(dir.path().join("kvm-probe.json")),
        firecracker: Some(fc.clone()),
        ..DetectOptions::default()
    });
    eprintln!("{}\n{}", d.reason, d.firecracker_reason);
    let info = d.firecracker.clone().expect("firecracker found");
    assert_eq!(info.path, fc);
    assert_eq!(info.version.as_deref(), Some("1.16.1"));
    assert_eq!(info.origin, "given");
    if hardware_virtualization() {
        eprintln!("this host has VMX/SVM: the not-usable half does not apply");
        return;
    }
    assert!(!d.firecracker_usable());
    assert!(
        d.firecracker_reason.contains("not usable"),
        "{}",
        d.firecracker_reason
    );
    let s = banger_vmm::select(banger_vmm::VmmChoice::Auto, &d).unwrap();
    assert_eq!(s.name, "qemu");
    assert!(
        s.reason
            .starts_with("auto: Firecracker is installed but KVM cannot run guests here (")
            && s.reason.ends_with("): using QEMU with software emulation"),
        "{}",
        s.reason
    );
    let e = banger_vmm::select(banger_vmm::VmmChoice::Firecracker, &d).unwrap_err();
    assert!(e.to_string().contains("KVM cannot run guests here"), "{e}");
}
