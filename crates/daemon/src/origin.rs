//! How this daemon was started, as `version` reports it (`banger daemon status` and
//! `banger doctor` say which daemon answers).
//!
//! `BANGER_STARTED_BY` is set by whoever starts bangerd on purpose: `cli` by the CLI's
//! on-demand start, `systemd` by the unit `banger daemon install` writes. It is read
//! before `INVOCATION_ID` (which systemd sets for every service): a CLI running inside some
//! service starts a daemon that inherits that id, and that daemon is still the CLI's.

use std::sync::LazyLock;

/// The description, computed once (the environment does not change while we run).
pub fn started_by() -> String {
    static STARTED_BY: LazyLock<String> = LazyLock::new(|| {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        describe(|name| std::env::var(name).ok(), &cgroup)
    });
    STARTED_BY.clone()
}

/// `var` reads the environment; `cgroup` is `/proc/self/cgroup`'s text.
pub fn describe(var: impl Fn(&str) -> Option<String>, cgroup: &str) -> String {
    match var("BANGER_STARTED_BY").as_deref() {
        Some("systemd") => return by_systemd(cgroup),
        Some("cli") => return "banger CLI (on demand)".into(),
        _ => {}
    }
    if var("INVOCATION_ID").is_some_and(|v| !v.is_empty()) {
        return by_systemd(cgroup);
    }
    "by hand".into()
}

/// `systemd unit NAME (user|system manager)`, from the unit's cgroup path: a user manager's
/// units live under `…/user@UID.service/`.
fn by_systemd(cgroup: &str) -> String {
    // The unified hierarchy's line is `0::/path`; on a hybrid host it is the last one too.
    let path = cgroup
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| cgroup.lines().last().and_then(|l| l.splitn(3, ':').nth(2)))
        .unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    let unit = if last.ends_with(".service") {
        last
    } else {
        "bangerd.service"
    };
    let manager = if path.contains("/user@") {
        "user"
    } else {
        "system"
    };
    format!("systemd unit {unit} ({manager} manager)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const USER_CG: &str =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/bangerd.service\n";
    const SYSTEM_CG: &str = "0::/system.slice/bangerd.service\n";

    #[test]
    fn systemd_user_and_system_units_are_named_with_their_manager() {
        assert_eq!(
            describe(env(&[("BANGER_STARTED_BY", "systemd")]), USER_CG),
            "systemd unit bangerd.service (user manager)"
        );
        assert_eq!(
            describe(env(&[("INVOCATION_ID", "abc")]), SYSTEM_CG),
            "systemd unit bangerd.service (system manager)"
        );
        let renamed = "0::/system.slice/sandboxes.service\n";
        assert_eq!(
            describe(env(&[("INVOCATION_ID", "abc")]), renamed),
            "systemd unit sandboxes.service (system manager)"
        );
    }

    #[test]
    fn a_cgroup_that_is_no_service_gives_the_default_unit_name() {
        let scope = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            describe(env(&[("BANGER_STARTED_BY", "systemd")]), scope),
            "systemd unit bangerd.service (system manager)"
        );
        assert_eq!(
            describe(env(&[("BANGER_STARTED_BY", "systemd")]), ""),
            "systemd unit bangerd.service (system manager)"
        );
        let v1 = "12:pids:/system.slice/x.service\n1:name=systemd:/system.slice/bangerd.service\n";
        assert_eq!(
            describe(env(&[("INVOCATION_ID", "abc")]), v1),
            "systemd unit bangerd.service (system manager)"
        );
    }

    #[test]
    fn the_cli_and_by_hand() {
        assert_eq!(
            describe(env(&[("BANGER_STARTED_BY", "cli")]), USER_CG),
            "banger CLI (on demand)"
        );
        // A CLI inside some service: its daemon inherits INVOCATION_ID but is the CLI's.
        assert_eq!(
            describe(
                env(&[("BANGER_STARTED_BY", "cli"), ("INVOCATION_ID", "abc")]),
                USER_CG
            ),
            "banger CLI (on demand)"
        );
        assert_eq!(describe(env(&[]), USER_CG), "by hand");
        assert_eq!(
            describe(env(&[("BANGER_STARTED_BY", "other")]), ""),
            "by hand"
        );
    }
}
