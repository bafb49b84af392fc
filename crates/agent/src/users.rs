//! Users and groups from the guest's own `/etc/passwd` and `/etc/group`.
//!
//! The agent is a static binary with no NSS: it never calls `getpwnam` and friends, it
//! reads the files under a configurable root (`/` in the guest, a temporary directory in
//! tests). A missing file is an empty database; `root` (uid 0) always resolves, so an
//! image without `/etc/passwd` still runs commands as root. A numeric uid that has no
//! entry runs with group 0 and `HOME=/`, as container runtimes do.

use std::path::Path;

/// The identity a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Login name (`USER`, `LOGNAME`); the uid in decimal when it has no entry.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (the primary one included).
    pub groups: Vec<u32>,
    /// Home directory (`HOME`, default working directory).
    pub home: String,
    /// Login shell (`SHELL`).
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(Passwd {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read(root.join(file))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn root_entry() -> Passwd {
    Passwd {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: "/root".into(),
        shell: "/bin/sh".into(),
    }
}

/// The gid of group `name` under `root`, if it exists.
pub fn group_id(root: &Path, name: &str) -> Option<u32> {
    parse_group(&read(root, "etc/group"))
        .into_iter()
        .find(|g| g.name == name)
        .map(|g| g.gid)
}

/// Resolves `user[:group]` (names or numbers; `None` is root) against the files under
/// `root`. The error is a message for the caller.
pub fn resolve(root: &Path, spec: Option<&str>) -> Result<Identity, String> {
    let passwd = parse_passwd(&read(root, "etc/passwd"));
    let groups = parse_group(&read(root, "etc/group"));
    let spec = spec.unwrap_or("root");
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let by_name = passwd.iter().find(|p| p.name == user).cloned();
    let entry = match (by_name, user.parse::<u32>()) {
        (Some(p), _) => p,
        (None, Ok(uid)) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .unwrap_or_else(|| match uid {
                0 => root_entry(),
                _ => Passwd {
                    name: uid.to_string(),
                    uid,
                    gid: 0,
                    home: "/".into(),
                    shell: "/bin/sh".into(),
                },
            }),
        (None, Err(_)) if user == "root" => root_entry(),
        (None, Err(_)) => return Err(format!("unknown user {user:?} (not in /etc/passwd)")),
    };
    let gid = match group {
        None => entry.gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|gr| gr.name == g)
                .map(|gr| gr.gid)
                .ok_or_else(|| format!("unknown group {g:?} (not in /etc/group)"))?,
        },
    };
    let mut supplementary = vec![gid];
    for g in groups.iter().filter(|g| g.members.contains(&entry.name)) {
        if !supplementary.contains(&g.gid) {
            supplementary.push(g.gid);
        }
    }
    Ok(Identity {
        name: entry.name,
        uid: entry.uid,
        gid,
        groups: supplementary,
        home: if entry.home.is_empty() {
            "/".into()
        } else {
            entry.home
        },
        shell: if entry.shell.is_empty() {
            "/bin/sh".into()
        } else {
            entry.shell
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        std::fs::write(dir.path().join("etc/passwd"), passwd).expect("write");
        std::fs::write(dir.path().join("etc/group"), group).expect("write");
        dir
    }

    #[test]
    fn names_numbers_and_groups() {
        let dir = root_with(
            "root:x:0:0:root:/root:/bin/bash\nbad line\nalice:x:1000:1000::/home/alice:/bin/zsh\n",
            "root:x:0:\nalice:x:1000:\nwheel:x:10:bob,alice\ndocker:x:999:alice\n",
        );
        let a = resolve(dir.path(), Some("alice")).expect("alice");
        assert_eq!((a.uid, a.gid), (1000, 1000));
        assert_eq!(a.groups, vec![1000, 10, 999]);
        assert_eq!(
            (a.home.as_str(), a.shell.as_str()),
            ("/home/alice", "/bin/zsh")
        );
        assert_eq!(
            resolve(dir.path(), Some("1000")).expect("uid").name,
            "alice"
        );
        assert_eq!(resolve(dir.path(), Some("alice:wheel")).expect("g").gid, 10);
        assert_eq!(resolve(dir.path(), Some("1000:5")).expect("g").gid, 5);
        let r = resolve(dir.path(), None).expect("root");
        assert_eq!((r.uid, r.shell.as_str()), (0, "/bin/bash"));
        let n = resolve(dir.path(), Some("4321")).expect("unknown uid");
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4321, 0, "/"));
        assert!(resolve(dir.path(), Some("mallory")).is_err());
        assert!(resolve(dir.path(), Some("alice:nogroup")).is_err());
    }

    #[test]
    fn missing_files_mean_root_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = resolve(dir.path(), Some("root")).expect("root");
        assert_eq!((r.uid, r.home.as_str()), (0, "/root"));
        assert!(resolve(dir.path(), Some("nobody")).is_err());
    }
}
